//! Cutting flows: deleting the connection-tracking entries of sources pbxfw has just blocked.
//!
//! The ruleset accepts established packets before it looks at the blacklist and the bans (the
//! fast path of docs/policy.md, "The packet path", step 2) when they belong to a connection the
//! remote end opened: its first packet passed those checks. What keeps "a blocked source loses
//! its flows at once" true is this module: after every addition to a set that blocks sources,
//! the runtime dumps the connection-tracking table and deletes every entry whose opener lies in
//! a blocked prefix. The next packet of such a flow is `new` again, meets the blacklist and
//! bans, and is dropped; conntrack never confirms an entry whose first packet was dropped. A
//! connection the PBX opened needs no cut: its answers never take the fast path, and the
//! PBX's own addresses are never cut (a ban of the PBX's own /64 must not end its sessions).
//!
//! Conntrack is ctnetlink (`NFNL_SUBSYS_CTNETLINK`), the same netfilter netlink socket as
//! nftables' but another subsystem: the kernel takes no ctnetlink message inside an nftables
//! batch, so the set update goes first (no new flow of the source can start) and the cut
//! follows. The kernel deletes by exact tuple only (its flush filters by mark, not by address),
//! hence the dump. iptables hosts have the same conntrack: the runtime cuts flows for both
//! backends through this module, which lives here for the socket code it shares.

use std::io;
use std::net::IpAddr;

use pbxfw_core::{addr_value, Family, Prefix};

use super::{
    attrs, dump_error, dump_messages, DumpMsg, Msg, NetlinkError, Reply, Socket, MAX_BATCH_BYTES,
    NLMSG_ERROR, NLM_F_ACK, NLM_F_REQUEST,
};

const NFNL_SUBSYS_CTNETLINK: u16 = 1;
const IPCTNL_MSG_CT_NEW: u16 = 0;
const IPCTNL_MSG_CT_GET: u16 = 1;
const IPCTNL_MSG_CT_DELETE: u16 = 2;
const NLM_F_DUMP: u16 = 0x300;
const CTA_TUPLE_ORIG: u16 = 1;
const CTA_ID: u16 = 12;
const CTA_ZONE: u16 = 18;
const CTA_TUPLE_IP: u16 = 1;
const CTA_IP_V4_SRC: u16 = 1;
const CTA_IP_V6_SRC: u16 = 3;
const AF_INET: u8 = libc::AF_INET as u8;
const AF_INET6: u8 = libc::AF_INET6 as u8;

/// One connection-tracking entry, as much of it as a cut needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flow {
    /// The address family.
    pub family: Family,
    /// The source of the original direction: who opened the flow.
    pub opener: u128,
    /// The original tuple as the kernel wrote it: a delete names the entry by it.
    orig: Vec<u8>,
    /// The entry's zone and id, sent back with the delete when the kernel gave them.
    zone: Option<Vec<u8>>,
    id: Option<Vec<u8>>,
}

impl Flow {
    /// Whether one of `addrs` opened the flow.
    pub fn opened_from(&self, addrs: &[IpAddr]) -> bool {
        addrs
            .iter()
            .any(|a| Family::of(a) == self.family && addr_value(a) == self.opener)
    }
}

/// What a cut did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cut {
    /// Entries in the table when it was read.
    pub flows: usize,
    /// Entries deleted (an entry that ended meanwhile is not counted).
    pub deleted: usize,
}

/// Delete every connection-tracking entry of the current network namespace that a source in
/// one of `blocked` opened, except those opened from one of `local` (the host's own
/// addresses). Nothing is read when `blocked` is empty.
pub fn cut(blocked: &[Prefix], local: &[IpAddr]) -> Result<Cut, NetlinkError> {
    if blocked.is_empty() || tracked() == Some(0) {
        return Ok(Cut::default());
    }
    // Most bans find no flow to cut: the kernel's text listing tells so without the dump.
    if let Some(openers) = openers() {
        if !any_opened(&openers, blocked, local) {
            return Ok(Cut {
                flows: openers.len(),
                deleted: 0,
            });
        }
    }
    let all = flows()?;
    let mut doomed = matching(&all, blocked);
    doomed.retain(|f| !f.opened_from(local));
    let deleted = delete(&doomed)?;
    Ok(Cut {
        flows: all.len(),
        deleted,
    })
}

/// Where the kernel counts the connection-tracking entries of the calling thread's network
/// namespace (a sysctl, read in the namespace of the thread that opens it).
const PROC_CONNTRACK_COUNT: &str = "/proc/sys/net/netfilter/nf_conntrack_count";

/// How many connection-tracking entries the current network namespace holds, unconfirmed
/// ones included (`None`: conntrack is not loaded, or the count cannot be read). One counter
/// read, where every listing walks the whole hash table (262,144 buckets on a host with
/// 24 GiB, about half a millisecond even when it is empty): a namespace that tracks nothing
/// has no flow to cut.
pub fn tracked() -> Option<u64> {
    std::fs::read_to_string(PROC_CONNTRACK_COUNT)
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Where the kernel lists the connection-tracking entries of the calling thread's network
/// namespace as text (`/proc/net` would be the main thread's: a thread may have entered
/// another namespace).
const PROC_CONNTRACK: &str = "/proc/thread-self/net/nf_conntrack";

/// Who opened each flow of the current network namespace: the original direction's source of
/// every entry, read from [`PROC_CONNTRACK`]. The kernel writes that listing walking its hash
/// table under RCU, a fraction of a millisecond; a ctnetlink dump takes the lock of every
/// bucket of the hash table (shared by all namespaces: 262,144 buckets, 9 ms, on a host with
/// 24 GiB).
///
/// Only a listing the kernel wrote in one walk is used: one `read` returns at most a page,
/// and each further `read` walks the table again from its start, counting entries, so entries
/// that came or went meanwhile shift it and some would go unseen. A listing longer than one
/// read (a few dozen flows), a missing listing (a kernel without conntrack's procfs) or a line
/// this does not understand gives `None`: the caller then dumps.
pub fn openers() -> Option<Vec<(Family, u128)>> {
    use std::io::Read;
    let mut f = std::fs::File::open(PROC_CONNTRACK).ok()?;
    let mut buf = vec![0u8; 64 * 1024];
    let n = f.read(&mut buf).ok()?;
    // An empty first read is the end of the listing: the walk found no entry. Any other needs
    // a second read to tell (and walks the table again): a read stops at a page, or earlier
    // when the next entry does not fit, and an entry's length has no bound (its security
    // context).
    let mut more = [0u8; 1];
    if n == buf.len() || (n > 0 && f.read(&mut more).ok()? != 0) {
        return None;
    }
    openers_in(std::str::from_utf8(&buf[..n]).ok()?)
}

/// [`openers`] of a listing: each line names its family first (`ipv4`, `ipv6`) and its
/// original tuple's source as the first `src=` field.
pub fn openers_in(text: &str) -> Option<Vec<(Family, u128)>> {
    let mut out = Vec::new();
    for line in text.lines() {
        let mut words = line.split_ascii_whitespace();
        let family = match words.next()? {
            "ipv4" => Family::Ipv4,
            "ipv6" => Family::Ipv6,
            _ => return None,
        };
        let src: IpAddr = words.find_map(|w| w.strip_prefix("src="))?.parse().ok()?;
        if Family::of(&src) != family {
            return None;
        }
        out.push((family, addr_value(&src)));
    }
    Some(out)
}

/// Whether a flow of `openers` was opened from one of `blocked`, not from one of `local`.
pub fn any_opened(openers: &[(Family, u128)], blocked: &[Prefix], local: &[IpAddr]) -> bool {
    let mut sorted: Vec<(Family, u128)> = openers
        .iter()
        .filter(|(f, v)| {
            !local
                .iter()
                .any(|a| Family::of(a) == *f && addr_value(a) == *v)
        })
        .copied()
        .collect();
    sorted.sort_unstable_by_key(|(f, v)| (family_index(*f), *v));
    blocked.iter().any(|p| {
        let key = (family_index(p.family()), p.start());
        let i = sorted.partition_point(|(f, v)| (family_index(*f), *v) < key);
        sorted
            .get(i)
            .is_some_and(|(f, v)| *f == p.family() && *v <= p.end())
    })
}

/// The entries of `flows` whose opener lies in one of `blocked`, each once. Sorting the
/// (few) openers and searching them once per prefix keeps a cut of a 100,000-entry blacklist
/// to one pass over the list, with no index of it built.
pub fn matching<'a>(flows: &'a [Flow], blocked: &[Prefix]) -> Vec<&'a Flow> {
    let mut by_family: [Vec<(u128, usize)>; 2] = [Vec::new(), Vec::new()];
    for (i, f) in flows.iter().enumerate() {
        by_family[family_index(f.family)].push((f.opener, i));
    }
    if flows.is_empty() {
        return Vec::new();
    }
    for v in &mut by_family {
        v.sort_unstable();
    }
    let mut hit = vec![false; flows.len()];
    for p in blocked {
        let v = &by_family[family_index(p.family())];
        let (start, end) = (p.start(), p.end());
        let first = v.partition_point(|(a, _)| *a < start);
        for (a, i) in &v[first..] {
            if *a > end {
                break;
            }
            hit[*i] = true;
        }
    }
    flows
        .iter()
        .zip(hit)
        .filter_map(|(f, h)| h.then_some(f))
        .collect()
}

fn family_index(f: Family) -> usize {
    match f {
        Family::Ipv4 => 0,
        Family::Ipv6 => 1,
    }
}

/// Every IPv4 and IPv6 connection-tracking entry of the current network namespace. A dump the
/// kernel marks interrupted (the table changed under it, so an entry may be missing) is read
/// again, up to three times in all.
pub fn flows() -> Result<Vec<Flow>, NetlinkError> {
    super::interrupted_again(dump)
}

fn dump() -> Result<Vec<Flow>, NetlinkError> {
    let sock = Socket::open().map_err(NetlinkError::Socket)?;
    let m = Msg::new(
        (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_GET,
        NLM_F_REQUEST | NLM_F_DUMP,
        1,
        0, // AF_UNSPEC: every family
        0,
    );
    sock.send(&m.finish()).map_err(NetlinkError::Socket)?;
    let mut buf = vec![0u8; 64 * 1024];
    let mut out = Vec::new();
    loop {
        let n = sock.recv(&mut buf).map_err(NetlinkError::Socket)?;
        match flows_reply(&buf[..n], &mut out)? {
            Reply::More => {}
            Reply::Done | Reply::NoSuchSet => {
                sock.park();
                return Ok(out);
            }
        }
    }
}

/// Read one datagram of a conntrack dump: its entries are appended to `out`. The reply is
/// checked as untrusted bytes (lengths before slices); a malformed one is an error, and an
/// entry without the addresses a cut needs is skipped. A dump the kernel marks interrupted,
/// or ends with an error, is an error (`EINTR` for the first: read it again).
pub fn flows_reply(buf: &[u8], out: &mut Vec<Flow>) -> Result<Reply, NetlinkError> {
    for msg in dump_messages(buf) {
        match msg? {
            DumpMsg::End(0) => return Ok(Reply::Done),
            DumpMsg::End(e) => return Err(dump_error(e)),
            DumpMsg::Entry {
                ty,
                family,
                attributes,
            } if ty == (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_NEW => {
                if let Some(f) = flow(family, attributes) {
                    out.push(f);
                }
            }
            DumpMsg::Entry { .. } => {
                return Err(NetlinkError::Socket(io::Error::other(
                    "malformed netlink reply",
                )))
            }
        }
    }
    Ok(Reply::More)
}

/// One entry from its nfgen family and attributes.
fn flow(family: u8, attributes: &[u8]) -> Option<Flow> {
    let family = match family {
        AF_INET => Family::Ipv4,
        AF_INET6 => Family::Ipv6,
        _ => return None,
    };
    let (mut orig, mut opener, mut zone, mut id) = (None, None, None, None);
    for (t, payload) in attrs(attributes) {
        match t {
            CTA_TUPLE_ORIG => {
                orig = Some(payload.to_vec());
                opener = tuple_source(family, payload);
            }
            CTA_ZONE if payload.len() == 2 => zone = Some(payload.to_vec()),
            CTA_ID if payload.len() == 4 => id = Some(payload.to_vec()),
            _ => {}
        }
    }
    Some(Flow {
        family,
        opener: opener?,
        orig: orig?,
        zone,
        id,
    })
}

/// The source address in a tuple, of the entry's own family.
fn tuple_source(family: Family, tuple: &[u8]) -> Option<u128> {
    let (_, ip) = attrs(tuple).find(|(t, _)| *t == CTA_TUPLE_IP)?;
    let (want, size) = match family {
        Family::Ipv4 => (CTA_IP_V4_SRC, 4),
        Family::Ipv6 => (CTA_IP_V6_SRC, 16),
    };
    let (_, src) = attrs(ip).find(|(t, p)| *t == want && p.len() == size)?;
    Some(match family {
        Family::Ipv4 => u32::from_be_bytes(src.try_into().ok()?) as u128,
        Family::Ipv6 => u128::from_be_bytes(src.try_into().ok()?),
    })
}

/// Delete `flows` (each by its original tuple, zone and id). Returns how many the kernel
/// deleted; an entry that ended meanwhile (`ENOENT`) is not an error.
pub fn delete(flows: &[&Flow]) -> Result<usize, NetlinkError> {
    if flows.is_empty() {
        return Ok(0);
    }
    let sock = Socket::open().map_err(NetlinkError::Socket)?;
    // Every delete is acknowledged; a chunk's acknowledgements must fit the receive buffer,
    // or the kernel drops them (ENOBUFS) and the rest would never be sent.
    sock.grow_buffer(libc::SO_RCVBUFFORCE, 1 << 20)
        .map_err(NetlinkError::Socket)?;
    let mut deleted = 0;
    let mut seq = 0u32;
    for chunk in chunks(flows) {
        let mut buf = Vec::new();
        let first = seq + 1;
        for f in chunk {
            seq += 1;
            buf.extend_from_slice(&delete_message(f, seq));
        }
        sock.send(&buf).map_err(NetlinkError::Socket)?;
        deleted += acks(&sock, first..=seq)?;
    }
    sock.park();
    Ok(deleted)
}

/// `flows` in runs of 64: their delete messages (a header and three attributes, well under
/// 256 bytes each) fit one `sendto`, and their acknowledgements (an error message each, under
/// 1 KiB of buffer each as the kernel counts it) the receive buffer.
fn chunks<'a, 'b>(flows: &'a [&'b Flow]) -> impl Iterator<Item = &'a [&'b Flow]> {
    const RUN: usize = 64;
    const _: () = assert!(RUN * 256 <= MAX_BATCH_BYTES);
    flows.chunks(RUN)
}

fn delete_message(f: &Flow, seq: u32) -> Vec<u8> {
    let family = match f.family {
        Family::Ipv4 => AF_INET,
        Family::Ipv6 => AF_INET6,
    };
    let mut m = Msg::new(
        (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_DELETE,
        NLM_F_REQUEST | NLM_F_ACK,
        seq,
        family,
        0,
    );
    m.begin(CTA_TUPLE_ORIG);
    m.buf.extend_from_slice(&f.orig);
    m.end();
    m.pad();
    if let Some(zone) = &f.zone {
        m.attr(CTA_ZONE, zone);
    }
    if let Some(id) = &f.id {
        m.attr(CTA_ID, id);
    }
    m.finish()
}

/// Read the acknowledgements of the messages numbered `seqs`; returns how many succeeded.
fn acks(sock: &Socket, seqs: std::ops::RangeInclusive<u32>) -> Result<usize, NetlinkError> {
    let mut pending = (*seqs.end() - *seqs.start() + 1) as usize;
    let mut done = 0;
    let mut buf = vec![0u8; 64 * 1024];
    while pending > 0 {
        let n = sock.recv(&mut buf).map_err(NetlinkError::Socket)?;
        let mut off = 0;
        while off + 16 <= n {
            let len = u32::from_ne_bytes(buf[off..off + 4].try_into().unwrap()) as usize;
            let ty = u16::from_ne_bytes(buf[off + 4..off + 6].try_into().unwrap());
            let seq = u32::from_ne_bytes(buf[off + 8..off + 12].try_into().unwrap());
            if len < 16 || len > n - off {
                return Err(NetlinkError::Socket(io::Error::other(
                    "malformed netlink reply",
                )));
            }
            if ty == NLMSG_ERROR && len >= 20 && seqs.contains(&seq) {
                let err = i32::from_ne_bytes(buf[off + 16..off + 20].try_into().unwrap());
                pending -= 1;
                match err {
                    0 => done += 1,
                    e if e == -libc::ENOENT => {}
                    e => {
                        return Err(NetlinkError::Socket(io::Error::from_raw_os_error(
                            e.checked_neg().unwrap_or(libc::EINVAL),
                        )))
                    }
                }
            }
            off += ((len + 3) & !3).min(n - off);
        }
    }
    Ok(done)
}

#[cfg(test)]
mod tests {

    /// The kernel's text listing: the first `src=` of a line is who opened the flow; an
    /// unknown line or family makes the listing unusable (the caller dumps instead).
    #[test]
    fn openers_are_read_from_the_text_listing() {
        let text = "ipv4     2 udp      17 29 src=192.0.2.7 dst=198.51.100.1 sport=34205 dport=9 [UNREPLIED] src=198.51.100.1 dst=192.0.2.7 sport=9 dport=34205 mark=0 zone=0 use=2\n\
ipv6     10 tcp      6 431999 ESTABLISHED src=2001:0db8:0000:0000:0000:0000:0000:0099 dst=2001:0db8:0000:0000:0000:0000:0000:0001 sport=40000 dport=22 src=2001:0db8:0000:0000:0000:0000:0000:0001 dst=2001:0db8:0000:0000:0000:0000:0000:0099 sport=22 dport=40000 [ASSURED] mark=0 zone=0 use=2\n";
        let o = openers_in(text).unwrap();
        let v4: IpAddr = "192.0.2.7".parse().unwrap();
        let v6: IpAddr = "2001:db8::99".parse().unwrap();
        assert_eq!(
            o,
            vec![
                (Family::Ipv4, addr_value(&v4)),
                (Family::Ipv6, addr_value(&v6))
            ]
        );
        let p = |s: &str| s.parse::<Prefix>().unwrap();
        assert!(any_opened(&o, &[p("192.0.2.0/24")], &[]));
        assert!(any_opened(&o, &[p("2001:db8::/64")], &[]));
        assert!(!any_opened(
            &o,
            &[p("192.0.3.0/24"), p("2001:db8:1::/64")],
            &[]
        ));
        // The host's own addresses are never cut.
        assert!(!any_opened(&o, &[p("192.0.2.0/24")], &[v4]));
        assert_eq!(openers_in("").unwrap(), vec![]);
        assert!(openers_in("ipx 1 src=192.0.2.1\n").is_none());
        assert!(openers_in("ipv4 2 udp 17 src=2001:db8::1\n").is_none());
        assert!(openers_in("ipv4 2 udp 17 dst=192.0.2.1\n").is_none());
    }

    use super::*;
    use std::str::FromStr;

    const CTA_TUPLE_REPLY: u16 = 2;

    /// A dump's entry as the kernel writes it (tuples nested two deep, the zone and id beside).
    fn entry(family: u8, orig_src: &[u8], reply_src: &[u8]) -> Vec<u8> {
        let mut m = Msg::new(
            (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_NEW,
            0x2,
            1,
            family,
            0,
        );
        let (src, dst) = if family == AF_INET {
            (CTA_IP_V4_SRC, CTA_IP_V4_SRC + 1)
        } else {
            (CTA_IP_V6_SRC, CTA_IP_V6_SRC + 1)
        };
        for (t, s, d) in [
            (CTA_TUPLE_ORIG, orig_src, reply_src),
            (CTA_TUPLE_REPLY, reply_src, orig_src),
        ] {
            m.begin(t);
            m.begin(CTA_TUPLE_IP);
            m.attr(src, s);
            m.attr(dst, d);
            m.end();
            m.end();
        }
        m.attr(CTA_ID, &7u32.to_be_bytes());
        m.finish()
    }

    #[test]
    fn dump_entries_are_read_as_untrusted_bytes() {
        let mut buf = entry(AF_INET, &[198, 51, 100, 7], &[192, 0, 2, 1]);
        buf.extend(entry(
            AF_INET6,
            &[0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9],
            &[0xfd; 16],
        ));
        let mut out = Vec::new();
        assert_eq!(flows_reply(&buf, &mut out).unwrap(), Reply::More);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].family, Family::Ipv4);
        assert_eq!(out[0].opener, 0xc633_6407);
        assert_eq!(out[1].opener, 0x2001_0db8_0000_0000_0000_0000_0000_0009);
        assert_eq!(out[0].id.as_deref(), Some(&7u32.to_be_bytes()[..]));

        // A tuple with a source of the wrong size, and an entry of another family, are skipped.
        let mut out = Vec::new();
        let odd = entry(AF_INET, &[1, 2, 3], &[4, 5, 6, 7]);
        let other = entry(7, &[1, 2, 3, 4], &[4, 5, 6, 7]);
        flows_reply(&[odd, other].concat(), &mut out).unwrap();
        assert!(out.is_empty());

        // A message whose length runs past the datagram, and one of another kind, are errors.
        let mut lying = entry(AF_INET, &[1, 2, 3, 4], &[4, 5, 6, 7]);
        lying[0..4].copy_from_slice(&4096u32.to_ne_bytes());
        assert!(flows_reply(&lying, &mut Vec::new()).is_err());
        let mut foreign = entry(AF_INET, &[1, 2, 3, 4], &[4, 5, 6, 7]);
        foreign[4..6].copy_from_slice(&0x0a0cu16.to_ne_bytes());
        assert!(flows_reply(&foreign, &mut Vec::new()).is_err());
        // Truncated input never panics.
        let whole = entry(AF_INET6, &[0xfd; 16], &[0xfe; 16]);
        for cut in 0..whole.len() {
            let _ = flows_reply(&whole[..cut], &mut Vec::new());
        }
    }

    #[test]
    fn a_flow_is_cut_when_its_opener_is_blocked() {
        let flow = |family, opener: u128| Flow {
            family,
            opener,
            orig: Vec::new(),
            zone: None,
            id: None,
        };
        let flows = [
            flow(Family::Ipv4, 0xc633_6407), // 198.51.100.7 opened it
            flow(Family::Ipv4, 0xc000_0201), // the PBX opened it (to anyone): never cut
            flow(Family::Ipv4, 0x0a00_0001), // 10.0.0.1: not blocked
            flow(Family::Ipv6, 0x2001_0db8_0066_0001 << 64 | 0xbeef),
        ];
        let blocked: Vec<Prefix> = ["198.51.100.0/24", "2001:db8:66:1::/64", "10.0.0.0/32"]
            .iter()
            .map(|s| Prefix::from_str(s).unwrap())
            .collect();
        let hit = matching(&flows, &blocked);
        assert_eq!(hit.len(), 2);
        assert!(hit
            .iter()
            .all(|f| f.opener != 0x0a00_0001 && f.opener != 0xc000_0201));
        // An IPv4 prefix never matches an IPv6 flow with the same bits, nor the reverse.
        let v4_zero = [Prefix::from_str("0.0.0.0/32").unwrap()];
        assert!(matching(&[flow(Family::Ipv6, 0)], &v4_zero).is_empty());
        assert!(matching(&flows, &[]).is_empty());
    }

    #[test]
    fn an_interrupted_or_failed_dump_is_an_error() {
        let mut intr = entry(AF_INET, &[1, 2, 3, 4], &[4, 5, 6, 7]);
        intr[6..8].copy_from_slice(&(0x2u16 | 0x10).to_ne_bytes());
        let e = flows_reply(&intr, &mut Vec::new()).unwrap_err();
        assert!(matches!(e, NetlinkError::Socket(e) if e.raw_os_error() == Some(libc::EINTR)));
        let mut done = Msg::new(0x3, 0x2, 1, 0, 0);
        done.buf.truncate(16);
        done.buf.extend_from_slice(&(-libc::ENOBUFS).to_ne_bytes());
        assert!(flows_reply(&done.finish(), &mut Vec::new()).is_err());
        // No "no such set" here: a conntrack dump that ends with ENOENT failed.
        let mut enoent = Msg::new(0x3, 0x2, 1, 0, 0);
        enoent.buf.truncate(16);
        enoent.buf.extend_from_slice(&(-libc::ENOENT).to_ne_bytes());
        let e = flows_reply(&enoent.finish(), &mut Vec::new()).unwrap_err();
        assert!(matches!(e, NetlinkError::Socket(e) if e.raw_os_error() == Some(libc::ENOENT)));
        let mut ok = Msg::new(0x3, 0x2, 1, 0, 0);
        ok.buf.truncate(16);
        ok.buf.extend_from_slice(&0i32.to_ne_bytes());
        assert_eq!(
            flows_reply(&ok.finish(), &mut Vec::new()).unwrap(),
            Reply::Done
        );
    }
}
