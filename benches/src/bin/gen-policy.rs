//! Print the benchmarks' base policy with a blacklist of N entries (default 100,000): the
//! input of `benches/scripts/edit-path.sh`, the same as the compile benchmark's
//! `blacklist_100k` (⅓ IPv4 addresses, ⅓ IPv4 CIDRs, ⅓ IPv6 prefixes).

fn main() {
    let n = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(100_000);
    print!("{}", pbxfw_benches::blacklist_policy(n));
}
