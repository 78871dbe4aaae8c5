//! Addresses, prefixes and ranges, in one numeric space per family.
//!
//! The IR and the zone classifier work on inclusive `u128` ranges so that IPv4 and IPv6 share one
//! implementation: an IPv4 address is its 32-bit value, an IPv6 address its 128-bit value, and
//! the [`Family`] says which space a number belongs to.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// An address family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    /// IPv4.
    Ipv4,
    /// IPv6.
    Ipv6,
}

impl Family {
    /// The family of an address.
    pub fn of(addr: &IpAddr) -> Family {
        match addr {
            IpAddr::V4(_) => Family::Ipv4,
            IpAddr::V6(_) => Family::Ipv6,
        }
    }

    /// Number of bits in an address of this family.
    pub fn bits(self) -> u8 {
        match self {
            Family::Ipv4 => 32,
            Family::Ipv6 => 128,
        }
    }

    /// Largest address value of this family.
    pub fn max_value(self) -> u128 {
        match self {
            Family::Ipv4 => u32::MAX as u128,
            Family::Ipv6 => u128::MAX,
        }
    }

    /// The suffix used in set names (`4` or `6`).
    pub fn suffix(self) -> &'static str {
        match self {
            Family::Ipv4 => "4",
            Family::Ipv6 => "6",
        }
    }

    /// Both families, IPv4 first.
    pub const BOTH: [Family; 2] = [Family::Ipv4, Family::Ipv6];
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Family::Ipv4 => "ipv4",
            Family::Ipv6 => "ipv6",
        })
    }
}

/// The numeric value of an address.
pub fn addr_value(addr: &IpAddr) -> u128 {
    match addr {
        IpAddr::V4(a) => u32::from(*a) as u128,
        IpAddr::V6(a) => u128::from(*a),
    }
}

/// The address of a numeric value in a family. Values above the family's range are truncated.
pub fn value_addr(family: Family, value: u128) -> IpAddr {
    match family {
        Family::Ipv4 => IpAddr::V4(Ipv4Addr::from(value as u32)),
        Family::Ipv6 => IpAddr::V6(Ipv6Addr::from(value)),
    }
}

/// A network prefix (`192.0.2.0/24`, `2001:db8::/32`); host bits are always zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Prefix {
    family: Family,
    start: u128,
    len: u8,
}

/// The `ipnet` crate's networks, for Rust programs that hold their addresses in it: a network
/// with host bits set becomes its prefix (`10.0.0.1/8` is `10.0.0.0/8`, as the policy reads
/// it). pbxfw keeps its own type inside: a prefix is a `u128` start and a length, shared with
/// [`Range`], the source maps and the interval arithmetic (docs/design.md, "Addresses").
impl From<ipnet::IpNet> for Prefix {
    fn from(n: ipnet::IpNet) -> Prefix {
        Prefix::new(n.addr(), n.prefix_len()).expect("an ipnet length fits its family")
    }
}

impl From<Prefix> for ipnet::IpNet {
    fn from(p: Prefix) -> ipnet::IpNet {
        ipnet::IpNet::new(p.addr(), p.len).expect("a prefix length fits its family")
    }
}

/// Why a prefix could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PrefixError {
    /// The address part is not an IPv4 or IPv6 address.
    #[error("is not an IP address")]
    BadAddress,
    /// The length part is not a number in range for the family.
    #[error("has a prefix length that is not 0..={max}")]
    BadLength {
        /// The family's largest length.
        max: u8,
    },
}

impl Prefix {
    /// The prefix of `addr` with `len` bits, clearing host bits. `len` must fit the family.
    pub fn new(addr: IpAddr, len: u8) -> Result<Prefix, PrefixError> {
        let family = Family::of(&addr);
        if len > family.bits() {
            return Err(PrefixError::BadLength { max: family.bits() });
        }
        Ok(Prefix {
            family,
            start: addr_value(&addr) & mask(family, len),
            len,
        })
    }

    /// A single-address prefix (/32 or /128).
    pub fn host(addr: IpAddr) -> Prefix {
        let family = Family::of(&addr);
        Prefix {
            family,
            start: addr_value(&addr),
            len: family.bits(),
        }
    }

    /// Parse `ADDR` or `ADDR/LEN`. Returns the prefix and whether host bits had to be cleared.
    pub fn parse_lenient(s: &str) -> Result<(Prefix, bool), PrefixError> {
        // A byte search: `split_once('/')` compares each match through `memcmp`, a quarter
        // of validating a 100k-entry blacklist.
        let (addr_s, len_s) = match s.bytes().position(|b| b == b'/') {
            Some(i) => (&s[..i], Some(&s[i + 1..])),
            None => (s, None),
        };
        let addr = IpAddr::from_str(addr_s).map_err(|_| PrefixError::BadAddress)?;
        let family = Family::of(&addr);
        let len = match len_s {
            None => family.bits(),
            Some(l) => {
                if l.is_empty() || l.len() > 3 || !l.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(PrefixError::BadLength { max: family.bits() });
                }
                l.parse::<u8>()
                    .ok()
                    .filter(|n| *n <= family.bits())
                    .ok_or(PrefixError::BadLength { max: family.bits() })?
            }
        };
        let p = Prefix::new(addr, len)?;
        Ok((p, p.start != addr_value(&addr)))
    }

    /// The family.
    pub fn family(&self) -> Family {
        self.family
    }

    /// The prefix length in bits.
    pub fn prefix_len(&self) -> u8 {
        self.len
    }

    /// First address value.
    pub fn start(&self) -> u128 {
        self.start
    }

    /// Last address value.
    pub fn end(&self) -> u128 {
        self.start | !mask(self.family, self.len) & self.family.max_value()
    }

    /// The first address.
    pub fn addr(&self) -> IpAddr {
        value_addr(self.family, self.start)
    }

    /// Whether this prefix covers a single address.
    pub fn is_host(&self) -> bool {
        self.len == self.family.bits()
    }

    /// Whether `addr` lies inside.
    pub fn contains(&self, addr: &IpAddr) -> bool {
        Family::of(addr) == self.family && {
            let v = addr_value(addr);
            v >= self.start && v <= self.end()
        }
    }

    /// Whether `other` lies entirely inside this prefix.
    pub fn covers(&self, other: &Prefix) -> bool {
        self.family == other.family && self.start <= other.start && other.end() <= self.end()
    }

    /// The range this prefix covers.
    pub fn range(&self) -> Range {
        Range {
            family: self.family,
            first: self.start,
            last: self.end(),
        }
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_host() {
            write!(f, "{}", self.addr())
        } else {
            write!(f, "{}/{}", self.addr(), self.len)
        }
    }
}

impl Serialize for Prefix {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Prefix {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Prefix, D::Error> {
        let s = String::deserialize(d)?;
        Prefix::from_str(&s).map_err(|_| {
            serde::de::Error::custom(format!("{s:?} is not a prefix with host bits clear"))
        })
    }
}

impl FromStr for Prefix {
    type Err = PrefixError;
    /// Strict parse: host bits must be clear.
    fn from_str(s: &str) -> Result<Prefix, PrefixError> {
        match Prefix::parse_lenient(s)? {
            (p, false) => Ok(p),
            (_, true) => Err(PrefixError::BadAddress),
        }
    }
}

/// The network mask of `len` bits in a family's value space.
pub fn mask(family: Family, len: u8) -> u128 {
    let bits = family.bits();
    if len == 0 {
        0
    } else {
        let ones = u128::MAX << (128 - len as u32);
        (ones >> (128 - bits as u32)) & family.max_value()
    }
}

/// An inclusive range of addresses of one family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Range {
    /// The family.
    pub family: Family,
    /// First address value.
    pub first: u128,
    /// Last address value (inclusive).
    pub last: u128,
}

impl Range {
    /// Whether `addr` lies inside.
    pub fn contains(&self, addr: &IpAddr) -> bool {
        Family::of(addr) == self.family && {
            let v = addr_value(addr);
            v >= self.first && v <= self.last
        }
    }

    /// The fewest prefixes that cover exactly this range, in address order (for backends whose
    /// sets hold prefixes, not ranges).
    pub fn prefixes(&self) -> Vec<Prefix> {
        let bits = u32::from(self.family.bits());
        // The last address of the block of 2^host_bits addresses starting at `first`.
        let block_last = |first: u128, host_bits: u32| -> Option<u128> {
            if host_bits == 128 {
                (first == 0).then_some(u128::MAX)
            } else {
                first.checked_add((1u128 << host_bits) - 1)
            }
        };
        let mut out = Vec::new();
        let mut first = self.first;
        loop {
            // The largest aligned block starting at `first` that stays inside the range.
            let mut host_bits = first.trailing_zeros().min(bits);
            while host_bits > 0 && block_last(first, host_bits).is_none_or(|l| l > self.last) {
                host_bits -= 1;
            }
            out.push(Prefix {
                family: self.family,
                start: first,
                len: (bits - host_bits) as u8,
            });
            match block_last(first, host_bits) {
                Some(end) if end < self.last => first = end + 1,
                _ => return out,
            }
        }
    }

    /// The range as a prefix, when it is exactly one.
    pub fn as_prefix(&self) -> Option<Prefix> {
        let size = self.last - self.first;
        if size == u128::MAX {
            return Some(Prefix {
                family: self.family,
                start: 0,
                len: 0,
            });
        }
        let count = size + 1;
        if !count.is_power_of_two() || self.first & (count - 1) != 0 {
            return None;
        }
        let host_bits = count.trailing_zeros() as u8;
        if host_bits > self.family.bits() {
            return None;
        }
        Some(Prefix {
            family: self.family,
            start: self.first,
            len: self.family.bits() - host_bits,
        })
    }
}

impl fmt::Display for Range {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.as_prefix() {
            Some(p) => write!(f, "{p}"),
            None => write!(
                f,
                "{}-{}",
                value_addr(self.family, self.first),
                value_addr(self.family, self.last)
            ),
        }
    }
}

impl FromStr for Range {
    type Err = PrefixError;
    fn from_str(s: &str) -> Result<Range, PrefixError> {
        match s.split_once('-') {
            Some((a, b)) => {
                let a = IpAddr::from_str(a).map_err(|_| PrefixError::BadAddress)?;
                let b = IpAddr::from_str(b).map_err(|_| PrefixError::BadAddress)?;
                if Family::of(&a) != Family::of(&b) || addr_value(&a) > addr_value(&b) {
                    return Err(PrefixError::BadAddress);
                }
                Ok(Range {
                    family: Family::of(&a),
                    first: addr_value(&a),
                    last: addr_value(&b),
                })
            }
            None => Ok(Prefix::from_str(s)?.range()),
        }
    }
}

#[cfg(test)]
mod tests {
    /// `ipnet` networks and prefixes convert both ways, host bits cleared.
    #[test]
    fn ipnet_networks_convert_both_ways() {
        use super::Prefix;
        for (net, prefix) in [
            ("192.0.2.0/24", "192.0.2.0/24"),
            ("10.0.0.1/8", "10.0.0.0/8"),
            ("198.51.100.7/32", "198.51.100.7"),
            ("2001:db8::1/48", "2001:db8::/48"),
            ("::/0", "::/0"),
        ] {
            let n: ipnet::IpNet = net.parse().unwrap();
            let p = Prefix::from(n);
            assert_eq!(p.to_string(), prefix);
            assert_eq!(ipnet::IpNet::from(p), n.trunc());
        }
    }

    #[test]
    fn ranges_split_into_the_fewest_prefixes() {
        let r = |a: &str, b: &str| {
            let (a, b): (IpAddr, IpAddr) = (a.parse().unwrap(), b.parse().unwrap());
            Range {
                family: Family::of(&a),
                first: addr_value(&a),
                last: addr_value(&b),
            }
            .prefixes()
            .iter()
            .map(|p| p.to_string())
            .collect::<Vec<_>>()
        };
        assert_eq!(
            r("10.1.0.0", "10.255.255.255"),
            [
                "10.1.0.0/16",
                "10.2.0.0/15",
                "10.4.0.0/14",
                "10.8.0.0/13",
                "10.16.0.0/12",
                "10.32.0.0/11",
                "10.64.0.0/10",
                "10.128.0.0/9"
            ]
        );
        assert_eq!(r("0.0.0.0", "255.255.255.255"), ["0.0.0.0/0"]);
        assert_eq!(r("::", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"), ["::/0"]);
        assert_eq!(r("192.0.2.7", "192.0.2.7"), ["192.0.2.7"]);
        assert_eq!(r("192.0.2.255", "192.0.3.0"), ["192.0.2.255", "192.0.3.0"]);
        assert_eq!(
            r("255.255.255.254", "255.255.255.255"),
            ["255.255.255.254/31"]
        );
    }

    use super::*;

    #[test]
    fn prefix_parse_and_print() {
        let (p, host_bits) = Prefix::parse_lenient("10.1.2.3/8").unwrap();
        assert!(host_bits);
        assert_eq!(p.to_string(), "10.0.0.0/8");
        assert_eq!(
            Prefix::from_str("2001:db8::/32").unwrap().to_string(),
            "2001:db8::/32"
        );
        assert_eq!(
            Prefix::from_str("192.0.2.7").unwrap().to_string(),
            "192.0.2.7"
        );
        assert!(Prefix::from_str("10.0.0.300").is_err());
        assert!(Prefix::from_str("10.0.0.0/33").is_err());
        assert!(Prefix::from_str("::/129").is_err());
        assert_eq!(
            Prefix::from_str("0.0.0.0/0").unwrap().end(),
            u32::MAX as u128
        );
        assert_eq!(Prefix::from_str("::/0").unwrap().end(), u128::MAX);
    }

    #[test]
    fn range_round_trip() {
        for s in [
            "10.0.0.0-10.1.2.2",
            "10.0.0.0/8",
            "::/0",
            "fd00::1-fd00::5",
            "1.2.3.4",
        ] {
            assert_eq!(Range::from_str(s).unwrap().to_string(), s);
        }
        assert!(Range::from_str("10.0.0.5-10.0.0.1").is_err());
        assert!(Range::from_str("10.0.0.5-::1").is_err());
    }
}
