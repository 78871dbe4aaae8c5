//! Times as people read them: `in 23 h 59 min`, `1 min 40 s ago`, and ISO 8601 for JSON
//! (which keeps the Unix seconds beside them). Pure: the caller gives the time.

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

/// `t` seen from `now` (both Unix seconds): `in 23 h 59 min`, `1 min 40 s ago`, `now`.
pub fn relative(now: u64, t: u64) -> String {
    match t.cmp(&now) {
        std::cmp::Ordering::Greater => format!("in {}", duration(t - now)),
        std::cmp::Ordering::Less => format!("{} ago", duration(now - t)),
        std::cmp::Ordering::Equal => "now".into(),
    }
}

/// Unix seconds as an ISO 8601 UTC time: `2026-12-06T04:46:21Z`.
pub fn iso8601(t: u64) -> String {
    let (days, rem) = (t / 86_400, t % 86_400);
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm, proleptic Gregorian).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn calendar_dates() {
        use super::iso8601;
        assert_eq!(iso8601(0), "1970-01-01T00:00:00Z");
        assert_eq!(iso8601(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(iso8601(1_796_532_381), "2026-12-06T04:46:21Z");
        assert_eq!(iso8601(4_107_542_399), "2100-02-28T23:59:59Z");
        assert_eq!(iso8601(4_107_542_400), "2100-03-01T00:00:00Z");
    }

    #[test]
    fn relative_times() {
        use super::relative;
        assert_eq!(relative(1000, 1100), "in 1 min 40 s");
        assert_eq!(relative(1100, 1000), "1 min 40 s ago");
        assert_eq!(relative(5, 5), "now");
    }

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
