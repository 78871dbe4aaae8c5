//! Longest-prefix-wins classification compiled into disjoint ranges (docs/policy.md, "Zones").
//!
//! Network overrides nest: `10.0.0.0/8 → local` with `10.1.2.3 → reject` inside it. A backend
//! with ordered rules could check the /32 first, but an interval map needs disjoint keys, so the
//! nesting is flattened here: the /8 becomes `10.0.0.0-10.1.2.2 → local`, `10.1.2.3 → reject`,
//! `10.1.2.4-10.255.255.255 → local`. Adjacent ranges of the same zone are merged.

use crate::model::Zone;
use crate::net::{Family, Prefix, Range};

/// Flatten `(prefix, zone)` pairs of one family into sorted, disjoint ranges where each address
/// maps to the zone of the longest prefix containing it. Equal prefixes must not repeat (the
/// validator rejects conflicting ones and drops duplicates).
pub fn flatten(family: Family, overrides: &[(Prefix, Zone)]) -> Vec<(Range, Zone)> {
    let mut items: Vec<(Prefix, Zone)> = overrides
        .iter()
        .filter(|(p, _)| p.family() == family)
        .copied()
        .collect();
    // Outer prefixes before the ones they contain: by start, then shorter first.
    items.sort_by(|a, b| {
        a.0.start()
            .cmp(&b.0.start())
            .then(a.0.prefix_len().cmp(&b.0.prefix_len()))
    });

    let mut out: Vec<(Range, Zone)> = Vec::new();
    let mut emit = |first: u128, last: u128, zone: Zone| {
        if let Some((r, z)) = out.last_mut() {
            if *z == zone && r.last.checked_add(1) == Some(first) {
                r.last = last;
                return;
            }
        }
        out.push((
            Range {
                family,
                first,
                last,
            },
            zone,
        ));
    };
    // The stack holds the prefixes containing the cursor, innermost on top; `cursor` is the
    // first address not yet emitted (None once past the end of the address space).
    let mut stack: Vec<(u128, Zone)> = Vec::new();
    let mut cursor: Option<u128> = Some(0);
    for (p, zone) in items {
        // Close every open prefix that ends before this one starts.
        while let Some(&(end, z)) = stack.last() {
            if end >= p.start() {
                break;
            }
            if let Some(c) = cursor.filter(|c| *c <= end) {
                emit(c, end, z);
            }
            cursor = end.checked_add(1);
            stack.pop();
        }
        if let (Some(&(_, z)), Some(c)) = (stack.last(), cursor) {
            if c < p.start() {
                emit(c, p.start() - 1, z);
            }
        }
        cursor = Some(p.start());
        stack.push((p.end(), zone));
    }
    while let Some((end, z)) = stack.pop() {
        if let Some(c) = cursor.filter(|c| *c <= end) {
            emit(c, end, z);
        }
        cursor = end.checked_add(1);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn run(family: Family, items: &[(&str, Zone)]) -> Vec<String> {
        let v: Vec<(Prefix, Zone)> = items
            .iter()
            .map(|(s, z)| (Prefix::from_str(s).unwrap(), *z))
            .collect();
        flatten(family, &v)
            .into_iter()
            .map(|(r, z)| format!("{r} {z}"))
            .collect()
    }

    #[test]
    fn hole_punching() {
        assert_eq!(
            run(
                Family::Ipv4,
                &[("10.0.0.0/8", Zone::Local), ("10.1.2.3", Zone::Reject)]
            ),
            [
                "10.0.0.0-10.1.2.2 local",
                "10.1.2.3 reject",
                "10.1.2.4-10.255.255.255 local"
            ]
        );
    }

    #[test]
    fn nested_three_deep_and_whole_space() {
        assert_eq!(
            run(
                Family::Ipv4,
                &[
                    ("0.0.0.0/0", Zone::Internet),
                    ("10.0.0.0/8", Zone::Local),
                    ("10.0.0.0/16", Zone::Other),
                    ("10.0.0.0/24", Zone::Local),
                ]
            ),
            [
                "0.0.0.0-9.255.255.255 internet",
                "10.0.0.0/24 local",
                "10.0.1.0-10.0.255.255 other",
                "10.1.0.0-10.255.255.255 local",
                "11.0.0.0-255.255.255.255 internet",
            ]
        );
        assert_eq!(
            run(
                Family::Ipv6,
                &[("::/0", Zone::Reject), ("ffff::/16", Zone::Local)]
            ),
            [
                "::-fffe:ffff:ffff:ffff:ffff:ffff:ffff:ffff reject",
                "ffff::/16 local"
            ]
        );
    }

    #[test]
    fn adjacent_same_zone_merges() {
        assert_eq!(
            run(
                Family::Ipv4,
                &[("10.0.0.0/25", Zone::Local), ("10.0.0.128/25", Zone::Local)]
            ),
            ["10.0.0.0/24 local"]
        );
    }
}
