//! Where the time of `pbxfw replay` goes (not a test): the two stages of replaying an Asterisk
//! log, each timed alone on one thread, cold (the first run, on fresh memory, as a one-shot
//! `pbxfw replay` sees it) and warm (the best of five): parsing every line, and running the
//! parsed events through the responsive state machine of the default policy.
//!
//! `python3 benches/scripts/gen-asterisk-log.py 200000 . > /tmp/full.log` then
//! `cargo run --release -p pbxfw-benches --bin replay-parts -- /tmp/full.log`.

use std::time::{Duration, Instant};

use pbxfw_core::log;
use pbxfw_core::{Machine, MachineConfig as Config};
use pbxfw_core::{Policy, DEFAULT_POLICY_TOML};

/// The first run's time, the best of five, and the last result.
fn timed<T>(mut f: impl FnMut() -> T) -> (Duration, Duration, T) {
    let mut cold = Duration::ZERO;
    let mut best = Duration::MAX;
    let mut out = None;
    for i in 0..5 {
        let t = Instant::now();
        let v = f();
        let took = t.elapsed();
        if i == 0 {
            cold = took;
        }
        best = best.min(took);
        out = Some(v);
    }
    (cold, best, out.expect("ran"))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn main() {
    let path = std::env::args().nth(1).expect("usage: replay-parts LOG");
    let text = std::fs::read_to_string(&path).expect("readable log");
    let lines = text.lines().count();
    // Lines found as `pbxfw replay` finds them, with `memchr`.
    let (parse_cold, parse, events) = timed(|| {
        let mut start = 0;
        let mut events = Vec::new();
        for end in memchr::memchr_iter(b'\n', text.as_bytes()) {
            if let Ok(Some(e)) = log::parse_line(&text[start..end], 2026) {
                events.push(e);
            }
            start = end + 1;
        }
        events
    });
    let policy = Policy::from_toml(DEFAULT_POLICY_TOML)
        .expect("parses")
        .validate()
        .expect("valid default");
    let (machine_cold, machine, actions) = timed(|| {
        let mut m = Machine::new(Config::from_policy(&policy));
        let mut t = 0;
        let mut actions = 0;
        for e in &events {
            t = e.at.unwrap_or(t);
            actions += m.on_event(&e.event, t).len();
        }
        actions
    });
    println!("{lines} lines, {} events, {actions} actions", events.len());
    println!(
        "parse:   cold {:.1} ms, warm {:.1} ms ({:.0} ns/line)",
        ms(parse_cold),
        ms(parse),
        parse.as_nanos() as f64 / lines as f64
    );
    println!(
        "machine: cold {:.1} ms, warm {:.1} ms ({:.0} ns/event)",
        ms(machine_cold),
        ms(machine),
        machine.as_nanos() as f64 / events.len() as f64
    );
}
