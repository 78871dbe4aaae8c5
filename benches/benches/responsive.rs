//! The responsive state machine and the event parsers: events per second on one core, and the
//! memory a tracked source costs.
//!
//! `cargo bench -p pbxfw-benches --bench responsive`
#![allow(missing_docs)] // criterion_group! generates undocumented items

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use pbxfw_core::Policy;
use pbxfw_core::{AuthFailure, SecurityEvent};
use pbxfw_core::{Machine, MachineConfig as Config};

fn config() -> Config {
    let p = Policy::from_toml("[interfaces]\neth0 = \"internet\"\n")
        .unwrap()
        .validate()
        .unwrap();
    Config::from_policy(&p)
}

/// A mixed stream: failures of every kind from 50k sources, some registrations.
fn events(n: usize) -> Vec<SecurityEvent> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let source = IpAddr::from(Ipv4Addr::from(0x0a00_0000 + (x % 50_000) as u32));
            match x % 10 {
                0..=3 => SecurityEvent::AuthFailed {
                    source,
                    account: Some("100".into()),
                    reason: AuthFailure::UnknownAccount,
                    user_agent: None,
                    protocol: None,
                },
                4..=7 => SecurityEvent::AuthFailed {
                    source,
                    account: Some("300".into()),
                    reason: AuthFailure::WrongPassword,
                    user_agent: Some("Yealink SIP-T46S".into()),
                    protocol: None,
                },
                8 => SecurityEvent::Registered {
                    source,
                    account: "301".into(),
                    expires: 600,
                },
                _ => SecurityEvent::AuthSucceeded {
                    source,
                    account: Some("301".into()),
                    user_agent: None,
                },
            }
        })
        .collect()
}

fn machine(c: &mut Criterion) {
    let evs = events(1_000_000);
    let mut g = c.benchmark_group("responsive");
    g.throughput(Throughput::Elements(evs.len() as u64));
    g.sample_size(10);
    g.bench_function("on_event, 1M mixed events, 50k sources", |b| {
        b.iter(|| {
            let mut m = Machine::new(config());
            let mut t = 1_795_000_000u64;
            for (i, e) in evs.iter().enumerate() {
                if i % 1000 == 0 {
                    t += 1;
                }
                black_box(m.on_event(e, t));
            }
            m.tracked()
        })
    });

    // The table filled with active bans (a botnet as large as the bound, all banned), then
    // a flood from new sources: eviction can free only what the flood itself brings.
    let mut full = Machine::new(config());
    let bound = full.config().max_sources;
    for i in 0..bound as u32 {
        let scanner = SecurityEvent::ScannerSeen {
            source: IpAddr::from(Ipv4Addr::from(0x0b00_0000 + i)),
            user_agent: Some("friendly-scanner".into()),
        };
        full.on_event(&scanner, 1_795_000_000);
    }
    let flood: Vec<SecurityEvent> = (0..100_000u32)
        .map(|i| SecurityEvent::AuthFailed {
            source: IpAddr::from(Ipv4Addr::from(0x0a00_0000 + i)),
            account: None,
            reason: AuthFailure::Other,
            user_agent: None,
            protocol: None,
        })
        .collect();
    g.throughput(Throughput::Elements(flood.len() as u64));
    g.bench_function("on_event, 100k new sources, table full of bans", |b| {
        b.iter_batched(
            || full.clone(),
            |mut m| {
                for e in &flood {
                    black_box(m.on_event(e, 1_795_000_001));
                }
                m.tracked()
            },
            BatchSize::LargeInput,
        )
    });
    g.finish();

    let lines = [
        "[2026-11-20 10:15:32] NOTICE[1638] chan_sip.c: Registration from '<sip:301@pbx.example.com>' failed for '203.0.113.9:5060' - Wrong password",
        "[2026-11-20 10:15:40] VERBOSE[2345][C-00000042] app_dial.c: Called PJSIP/300",
        "[2026-11-20 10:15:41] NOTICE[1640] res_pjsip/pjsip_distributor.c: Request 'REGISTER' from '<sip:100@192.0.2.10>' failed for '203.0.113.9:5060' (callid: abc) - No matching endpoint found",
    ];
    let mut g = c.benchmark_group("parsers");
    g.throughput(Throughput::Elements(lines.len() as u64));
    g.bench_function("log line", |b| {
        b.iter(|| {
            for l in &lines {
                black_box(pbxfw_core::log::parse_line(black_box(l), 2026).ok());
            }
        })
    });
    g.finish();
}

criterion_group!(benches, machine);
criterion_main!(benches);
