//! The log follower's framing (`pbxfw_core::log::Framer`): any bytes, cut into lines as a follower
//! cuts them. Nothing may panic, and reading must not depend on where it was interrupted: a
//! framer saved and restored (as the daemon does at every state write) at any line gives what
//! one framer reading everything gives.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pbxfw_core::log::Framer;

fuzz_target!(|data: &[u8]| {
    let Some((&cut, text)) = data.split_first() else {
        return;
    };
    let lines: Vec<&[u8]> = text.split_inclusive(|b| *b == b'\n').collect();
    let mut whole = Framer::default();
    let once: Vec<_> = lines.iter().map(|l| whole.read(l, 2026, 0)).collect();
    let at = usize::from(cut) % (lines.len() + 1);
    let mut first = Framer::default();
    let mut resumed: Vec<_> = lines[..at].iter().map(|l| first.read(l, 2026, 0)).collect();
    let saved = serde_json::to_string(&first).expect("a framer serialises");
    let mut second: Framer = serde_json::from_str(&saved).expect("and reads back");
    resumed.extend(lines[at..].iter().map(|l| second.read(l, 2026, 0)));
    assert_eq!(once, resumed);
});
