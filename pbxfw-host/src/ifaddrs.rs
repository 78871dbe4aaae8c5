//! The host's own addresses (`getifaddrs(3)`): a ban from outside never covers them, or the
//! PBX would drop its own traffic to itself (docs/fleet.md).
#![allow(unsafe_code)] // getifaddrs(3)/freeifaddrs(3), reading the list they return.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Every address configured on an interface of this network namespace.
pub fn local_addresses() -> io::Result<Vec<IpAddr>> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs writes a list head we own until freeifaddrs.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let mut out = Vec::new();
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list getifaddrs returned, not yet freed.
        let ifa = unsafe { &*cur };
        if !ifa.ifa_addr.is_null() {
            // SAFETY: ifa_addr points to a sockaddr whose family says its real type.
            let family = i32::from(unsafe { (*ifa.ifa_addr).sa_family });
            if family == libc::AF_INET {
                // SAFETY: an AF_INET sockaddr is a sockaddr_in.
                let sin = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in) };
                out.push(IpAddr::V4(Ipv4Addr::from(u32::from_be(
                    sin.sin_addr.s_addr,
                ))));
            } else if family == libc::AF_INET6 {
                // SAFETY: an AF_INET6 sockaddr is a sockaddr_in6.
                let sin6 = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in6) };
                out.push(IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr)));
            }
        }
        cur = ifa.ifa_next;
    }
    // SAFETY: the head getifaddrs returned, freed once.
    unsafe { libc::freeifaddrs(head) };
    out.sort();
    out.dedup();
    Ok(out)
}

/// The next hops of the default routes (`/proc/net/route`, `/proc/net/ipv6_route`): a ban
/// on the gateway cuts the host off from everything beyond its link.
pub fn default_gateways() -> Vec<IpAddr> {
    gateways_of(
        &std::fs::read_to_string("/proc/net/route").unwrap_or_default(),
        &std::fs::read_to_string("/proc/net/ipv6_route").unwrap_or_default(),
    )
}

fn gateways_of(v4: &str, v6: &str) -> Vec<IpAddr> {
    let mut out = Vec::new();
    {
        let text = v4;
        for l in text.lines().skip(1) {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() > 7 && f[1] == "00000000" && f[7] == "00000000" {
                if let Ok(g) = u32::from_str_radix(f[2], 16) {
                    if g != 0 {
                        // The kernel prints the address's bytes read as a native integer.
                        out.push(IpAddr::V4(Ipv4Addr::from(g.to_ne_bytes())));
                    }
                }
            }
        }
    }
    {
        let text = v6;
        for l in text.lines() {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() > 4 && f[1] == "00" && f[0].bytes().all(|b| b == b'0') {
                if let Ok(g) = u128::from_str_radix(f[4], 16) {
                    if g != 0 {
                        out.push(IpAddr::V6(Ipv6Addr::from(g)));
                    }
                }
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn loopback_is_among_them() {
        let addrs = super::local_addresses().unwrap();
        assert!(addrs.iter().any(|a| a.is_loopback()), "{addrs:?}");
    }

    #[test]
    fn default_routes_are_read() {
        let v4 =
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
                  eth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
                  eth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n";
        let v6 = "fe800000000000000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000002 00000000 00000001 eth0\n\
                  00000000000000000000000000000000 00 00000000000000000000000000000000 00 fd000000000000000000000000000001 00000400 00000003 00000000 00000003 eth0\n";
        let got: Vec<String> = super::gateways_of(v4, v6)
            .iter()
            .map(|a| a.to_string())
            .collect();
        if cfg!(target_endian = "little") {
            assert_eq!(got, ["192.0.2.1", "fd00::1"]);
        }
    }

    #[test]
    fn the_default_gateway_is_read() {
        // This machine's: whatever it is, it is a unicast address on a route of its own.
        for g in super::default_gateways() {
            assert!(!g.is_unspecified() && !g.is_multicast(), "{g}");
        }
    }
}
