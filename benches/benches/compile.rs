//! Benchmarks of the compile path: policy TOML text → validate → compile → nft script, in full
//! and stage by stage, plus the reference evaluator on the largest ruleset.
//!
//! `cargo bench -p pbxfw-benches`; BENCHMARKS.md records the figures and the target (a
//! 100k-entry blacklist policy through the whole path in under 100 ms on one core).
// `criterion_group!` defines an undocumented `pub fn`.
#![allow(missing_docs)]

use std::hint::black_box;
use std::time::Duration;

use criterion::measurement::WallTime;
use criterion::{
    criterion_group, criterion_main, BenchmarkGroup, BenchmarkId, Criterion, Throughput,
};
use pbxfw_benches::{blacklist_list_policy, blacklist_policy, networks_policy, LIST_PATH};
use pbxfw_core::{compile, eval, DynamicState, Packet, Policy, Proto, Ruleset, ValidPolicy};
use pbxfw_nft::{lower, Options};

/// The inputs, named as they appear in the report: (name, entries, policy text).
fn inputs() -> Vec<(&'static str, u64, String)> {
    vec![
        ("blacklist_10", 10, blacklist_policy(10)),
        ("blacklist_1k", 1_000, blacklist_policy(1_000)),
        ("blacklist_100k", 100_000, blacklist_policy(100_000)),
        ("networks_10k", 10_000, networks_policy(10_000)),
    ]
}

fn validate(text: &str) -> ValidPolicy {
    Policy::from_toml(text)
        .expect("generated policies parse")
        .validate()
        .expect("generated policies validate")
}

/// A group with few samples: the large inputs take hundreds of milliseconds per iteration,
/// and criterion runs 1 + 2 + ... + N iterations for N samples.
fn group<'c>(c: &'c mut Criterion, name: &str) -> BenchmarkGroup<'c, WallTime> {
    let mut g = c.benchmark_group(name);
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    g
}

fn full_path(c: &mut Criterion) {
    let mut g = group(c, "full");
    for (name, entries, text) in inputs() {
        g.throughput(Throughput::Elements(entries));
        g.bench_with_input(BenchmarkId::from_parameter(name), &text, |b, text| {
            b.iter(|| {
                let valid = validate(black_box(text));
                let rs = compile(&valid);
                lower(&rs, &Options::default()).expect("lowers")
            })
        });
    }
    g.finish();
}

/// The 100k blacklist from a list file (the text given as the runtime gives it after reading
/// the file): parse the small policy, validate with the list, compile; and lower.
fn list_file(c: &mut Criterion) {
    let mut g = group(c, "list");
    let (policy, list) = blacklist_list_policy(100_000);
    g.throughput(Throughput::Elements(100_000));
    let parse_compile = || {
        let mut p = Policy::from_toml(black_box(&policy)).expect("parses");
        p.attach_list(LIST_PATH, black_box(&list).clone());
        compile(&p.validate().expect("validates"))
    };
    g.bench_function("parse_compile/blacklist_100k", |b| b.iter(parse_compile));
    // The same entries in the policy's TOML, side by side.
    let toml = blacklist_policy(100_000);
    g.bench_function("toml_parse_compile/blacklist_100k", |b| {
        b.iter(|| compile(&validate(black_box(&toml))))
    });
    g.bench_function("full/blacklist_100k", |b| {
        b.iter(|| lower(&parse_compile(), &Options::default()).expect("lowers"))
    });
    g.finish();
}

fn stages(c: &mut Criterion) {
    let mut g = group(c, "stage");
    for (name, entries, text) in inputs() {
        if entries < 10_000 {
            continue;
        }
        let valid = validate(&text);
        let rs = compile(&valid);
        g.throughput(Throughput::Elements(entries));
        g.bench_function(BenchmarkId::new("parse_validate", name), |b| {
            b.iter(|| validate(black_box(&text)))
        });
        // The two halves of parse_validate, and the same document as JSON: how much of the
        // front end is the TOML parser.
        let policy = Policy::from_toml(&text).expect("generated policies parse");
        let json = serde_json::to_string(policy.as_value()).expect("serialises");
        g.bench_function(BenchmarkId::new("parse", name), |b| {
            b.iter(|| Policy::from_toml(black_box(&text)).expect("parses"))
        });
        g.bench_function(BenchmarkId::new("validate", name), |b| {
            b.iter(|| black_box(&policy).validate().expect("validates"))
        });
        g.bench_function(BenchmarkId::new("parse_validate_json", name), |b| {
            b.iter(|| {
                Policy::from_json(black_box(&json))
                    .expect("parses")
                    .validate()
                    .expect("validates")
            })
        });
        g.bench_function(BenchmarkId::new("compile", name), |b| {
            b.iter(|| compile(black_box(&valid)))
        });
        g.bench_function(BenchmarkId::new("lower", name), |b| {
            b.iter(|| lower(black_box(&rs), &Options::default()).expect("lowers"))
        });
    }
    g.finish();
}

fn evaluator(c: &mut Criterion) {
    let rs: Ruleset = compile(&validate(&blacklist_policy(100_000)));
    let state = DynamicState::default();
    // Not blacklisted (10/8 is never generated): the packet walks the whole input chain.
    let sip = Packet::new("eth0", "10.1.2.3".parse().unwrap(), Proto::Udp, Some(5060));
    c.bench_function("eval/blacklist_100k", |b| {
        b.iter(|| eval(black_box(&rs), black_box(&sip), &state))
    });
}

criterion_group!(benches, full_path, stages, list_file, evaluator);
criterion_main!(benches);
