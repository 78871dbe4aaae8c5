//! Searching short ASCII texts for a byte: the parsers' inner loops.
//!
//! A log line is read by finding a few delimiters (`]`, `:`, `,`, `'`) in spans of a few to a
//! few hundred bytes. For those, a word-at-a-time loop beats both a byte loop and `memchr`
//! (whose set-up is paid per call), and a char pattern's searcher costs more than the search.

/// The first `b` in `h`, eight bytes at a time: cheaper than `memchr` on these short texts,
/// and than a byte loop on the longer ones (a security line's fields).
pub(crate) fn pos(h: &[u8], b: u8) -> Option<usize> {
    const LOW: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGH: u64 = u64::from_ne_bytes([0x80; 8]);
    let pattern = u64::from_ne_bytes([b; 8]);
    let mut chunks = h.chunks_exact(8);
    let mut at = 0;
    for chunk in &mut chunks {
        let word = u64::from_le_bytes(chunk.try_into().expect("eight bytes")) ^ pattern;
        // A byte of `word` is zero where `h` has `b`; the lowest flag is always a true one
        // (a borrow only runs towards higher bytes).
        let found = word.wrapping_sub(LOW) & !word & HIGH;
        if found != 0 {
            return Some(at + (found.trailing_zeros() / 8) as usize);
        }
        at += 8;
    }
    chunks
        .remainder()
        .iter()
        .position(|c| *c == b)
        .map(|i| at + i)
}

/// The last `b` in `h`, eight bytes at a time from the end.
pub(crate) fn rpos(h: &[u8], b: u8) -> Option<usize> {
    const LOW7: u64 = u64::from_ne_bytes([0x7f; 8]);
    let pattern = u64::from_ne_bytes([b; 8]);
    let mut chunks = h.rchunks_exact(8);
    let mut end = h.len();
    for chunk in &mut chunks {
        end -= 8;
        let word = u64::from_le_bytes(chunk.try_into().expect("eight bytes")) ^ pattern;
        // The high bit of each byte that is zero, exactly (no borrow between bytes), so the
        // highest one is the last match.
        let found = !((((word & LOW7) + LOW7) | word) | LOW7);
        if found != 0 {
            return Some(end + (7 - found.leading_zeros() / 8) as usize);
        }
    }
    chunks.remainder().iter().rposition(|c| *c == b)
}

/// `s.split_once(c)` for an ASCII `c`, with [`pos`]: on these short texts a char pattern's
/// searcher (`memchr` behind it) costs more than the search; these splits were a twentieth
/// of reading a log.
pub(crate) fn split_byte(s: &str, c: u8) -> Option<(&str, &str)> {
    debug_assert!(c.is_ascii());
    let i = pos(s.as_bytes(), c)?;
    Some((&s[..i], &s[i + 1..]))
}

/// `s.rsplit_once(c)` for an ASCII `c`, as [`split_byte`].
pub(crate) fn rsplit_byte(s: &str, c: u8) -> Option<(&str, &str)> {
    debug_assert!(c.is_ascii());
    let i = rpos(s.as_bytes(), c)?;
    Some((&s[..i], &s[i + 1..]))
}

#[cfg(test)]
mod tests {
    use proptest::num::u8::ANY;
    use proptest::strategy::Just;

    use super::*;

    proptest::proptest! {
        /// The word-at-a-time search finds the first occurrence, as a byte loop does.
        #[test]
        fn pos_finds_the_first_byte(
            h in proptest::collection::vec(proptest::prop_oneof![Just(b','), Just(0x2du8), Just(0xacu8), Just(0u8), ANY], 0..40),
            b in proptest::prop_oneof![Just(b','), Just(b']'), ANY],
        ) {
            proptest::prop_assert_eq!(pos(&h, b), h.iter().position(|c| *c == b));
        }

        /// The same, from the end.
        #[test]
        fn rpos_finds_the_last_byte(
            h in proptest::collection::vec(proptest::prop_oneof![Just(b','), Just(0x2du8), Just(0xacu8), Just(0u8), Just(0x01u8), ANY], 0..40),
            b in proptest::prop_oneof![Just(b','), Just(0u8), ANY],
        ) {
            proptest::prop_assert_eq!(rpos(&h, b), h.iter().rposition(|c| *c == b));
        }
    }
}
