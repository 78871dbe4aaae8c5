//! Times as people read them: `23 h 59 min`, `1 min 40 s` (JSON keeps numbers).

/// A duration in seconds, in its two largest units: `45 s`, `1 min 40 s`, `23 h 59 min`,
/// `3 d 4 h`.
pub fn duration(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    let parts = [(d, "d"), (h, "h"), (m, "min"), (s, "s")];
    let first = parts.iter().position(|(n, _)| *n > 0).unwrap_or(3);
    parts[first..]
        .iter()
        .take(2)
        .filter(|(n, _)| *n > 0 || first == 3)
        .map(|(n, unit)| format!("{n} {unit}"))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    #[test]
    fn two_largest_units() {
        use super::duration;
        assert_eq!(duration(0), "0 s");
        assert_eq!(duration(45), "45 s");
        assert_eq!(duration(100), "1 min 40 s");
        assert_eq!(duration(3600), "1 h");
        assert_eq!(duration(86_399), "23 h 59 min");
        assert_eq!(duration(86_400 * 3 + 4 * 3600 + 5), "3 d 4 h");
        assert_eq!(duration(86_400 + 30), "1 d");
    }
}
