//! The AMI reader (`pbxfw_core::AmiReader`): a byte stream cut into chunks whose sizes come from
//! the input. Nothing may panic, the reader never holds more than its limit plus one chunk,
//! and what it reads does not depend on how the stream was cut (one byte at a time, the
//! fuzzer's chunks, all at once).
#![no_main]

use libfuzzer_sys::fuzz_target;
use pbxfw_core::{ami::login_response, ami::AmiReader};

fn read(data: &[u8], sizes: impl Fn(&[u8]) -> usize) -> Vec<String> {
    let mut reader = AmiReader::with_limit(4096);
    let mut out = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        let n = sizes(rest).clamp(1, rest.len());
        let (chunk, tail) = rest.split_at(n);
        reader.feed(chunk);
        rest = tail;
        while let Some(item) = reader.next_event() {
            out.push(format!("{item:?}"));
        }
        assert!(reader.pending() <= 4096 + n);
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let chunked = read(data, |rest| 1 + rest[0] as usize % 97);
    let bytewise = read(data, |_| 1);
    let whole = read(data, |rest| rest.len());
    assert_eq!(chunked, bytewise);
    assert_eq!(chunked, whole);
    let _ = login_response(&String::from_utf8_lossy(data));
});
