//! scratch
use pbxfw_core::events::log;
use pbxfw_core::responsive::{Config, Machine};
use pbxfw_core::{Policy, DEFAULT_POLICY_TOML};
use std::time::Instant;
fn main() {
    let path = std::env::args().nth(1).unwrap();
    let reps: usize = std::env::args().nth(2).map_or(5, |s| s.parse().unwrap());
    let text = std::fs::read_to_string(&path).unwrap();
    let mut start = 0;
    let mut events = Vec::new();
    for end in memchr::memchr_iter(b'\n', text.as_bytes()) {
        if let Ok(Some(e)) = log::parse_line(&text[start..end], 2026) {
            events.push(e);
        }
        start = end + 1;
    }
    let policy = Policy::from_toml(DEFAULT_POLICY_TOML)
        .unwrap()
        .validate()
        .unwrap();
    let mut all = vec![];
    for _ in 0..reps {
        let cfg = Config::from_policy(&policy);
        let t0 = Instant::now();
        let mut m = Machine::new(cfg);
        let mut t = 0;
        let mut n = 0;
        for e in &events {
            t = e.at.unwrap_or(t);
            n += m.on_event(&e.event, t).len();
        }
        all.push(t0.elapsed().as_secs_f64() * 1e3);
        std::hint::black_box(n);
    }
    all.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!("min {:.1} median {:.1} ms", all[0], all[all.len() / 2]);
}
