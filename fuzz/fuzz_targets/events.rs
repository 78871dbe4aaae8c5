//! The security-event parsers: Asterisk log lines, AMI streams fed in arbitrary chunks, and
//! JSON lines. None may panic; whatever parses as a JSON event must print and parse back equal.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pbxfw_core::{ami::AmiReader, json, log};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    for line in text.lines() {
        let _ = log::parse_line(line, 2026);
        if let Ok(ev) = json::parse_line(line) {
            let again = json::parse_line(&json::to_line(&ev)).expect("printed events parse");
            assert_eq!(again, ev);
        }
    }
    // The AMI reader sees the bytes in chunks whose sizes come from the input itself.
    let mut reader = AmiReader::new();
    let mut rest = data;
    while !rest.is_empty() {
        let n = 1 + rest[0] as usize % 64;
        let (chunk, tail) = rest.split_at(n.min(rest.len()));
        reader.feed(chunk);
        rest = tail;
        while reader.next_event().is_some() {}
    }
    let _ = pbxfw_core::ami::parse_event(&text);
});
