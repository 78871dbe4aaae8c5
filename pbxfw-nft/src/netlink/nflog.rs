//! nfnetlink_log: the packets a rule hands to a log group, read by the program bound to it.
//!
//! The kernel tiers hand every source they ban to [`pbxfw_core::names::TIER_BAN_LOG_GROUP`]
//! (a `log group` statement in nft, an `NFLOG` target in iptables), so that the daemon can cut
//! the source's flows as every other ban does (docs/responsive.md, "Flows of a banned
//! source"). [`Listener`] binds the group and reads the source addresses back; [`sources`]
//! parses a received buffer and is what the fuzzer drives.
//!
//! What arrives is the first bytes of a packet an attacker sent: only the network header's
//! source address is read, and only from a message of the kernel (port id 0) for the bound
//! group, whose family and IP version agree and which holds the whole address. Anything else
//! is skipped, never guessed at. The listener acts on nothing by itself: the daemon checks
//! each source against the kernel's ban set before it cuts a flow.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::{attrs, owner, Msg, NetlinkError, Socket, NLMSG_ERROR, NLM_F_ACK, NLM_F_REQUEST};

const NFNL_SUBSYS_ULOG: u16 = 4;
const NFULNL_MSG_PACKET: u16 = 0;
const NFULNL_MSG_CONFIG: u16 = 1;
const NFULA_CFG_CMD: u16 = 1;
const NFULA_CFG_MODE: u16 = 2;
const NFULA_CFG_TIMEOUT: u16 = 4;
const NFULA_CFG_QTHRESH: u16 = 5;
const NFULNL_CFG_CMD_BIND: u8 = 1;
const NFULNL_COPY_PACKET: u8 = 2;
const NFULA_PAYLOAD: u16 = 9;
const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;
const NLMSG_OVERRUN: u16 = 4;

/// The bytes of each packet the kernel copies: the network header up to the end of an IPv6
/// source address.
pub const COPY_BYTES: u32 = 40;

/// The most sources [`Listener::drain`] gathers in one call.
pub const DRAIN_MAX: usize = 4096;

/// What one wait on the listener brought.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Received {
    /// The sources of the packets that arrived (none when the wait timed out).
    Sources(Vec<IpAddr>),
    /// The socket's buffer overflowed and messages were lost: the caller must look at the
    /// kernel's ban sets whole.
    Lost,
}

/// A socket bound to one nfnetlink_log group of the calling thread's network namespace.
pub struct Listener {
    sock: Socket,
    group: u16,
    buf: Vec<u8>,
}

impl Listener {
    /// Bind `group`, asking for each packet's first [`COPY_BYTES`] bytes at once (a queue
    /// threshold of one, no flush timer). Fails (`EPERM`) when another socket holds the
    /// group. Waits for a packet time out after five seconds.
    pub fn bind(group: u16) -> Result<Listener, NetlinkError> {
        let sock = Socket::open_new(owner()).map_err(NetlinkError::Socket)?;
        // A burst of bans (a distributed flood) queues here rather than being lost.
        sock.grow_buffer(libc::SO_RCVBUFFORCE, 4 << 20)
            .map_err(NetlinkError::Socket)?;
        let mut m = Msg::new(
            (NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_CONFIG,
            NLM_F_REQUEST | NLM_F_ACK,
            1,
            0,
            group,
        );
        m.attr(NFULA_CFG_CMD, &[NFULNL_CFG_CMD_BIND]);
        let mut mode = COPY_BYTES.to_be_bytes().to_vec();
        mode.extend_from_slice(&[NFULNL_COPY_PACKET, 0]);
        m.attr(NFULA_CFG_MODE, &mode);
        m.attr(NFULA_CFG_QTHRESH, &1u32.to_be_bytes());
        m.attr(NFULA_CFG_TIMEOUT, &0u32.to_be_bytes());
        sock.send(&m.finish()).map_err(NetlinkError::Socket)?;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            // Packets logged meanwhile may fill the buffer before the acknowledgement comes:
            // the caller sweeps the ban sets after binding, so those are not lost.
            let (n, from) = match recv_from(&sock, &mut buf, 0) {
                Ok(got) => got,
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => continue,
                Err(e) => return Err(NetlinkError::Socket(e)),
            };
            if from != 0 {
                continue;
            }
            if let Some(errno) = ack(&buf[..n]) {
                if errno == 0 {
                    break;
                }
                return Err(NetlinkError::Refused {
                    set: format!("nfnetlink_log group {group}"),
                    source: io::Error::from_raw_os_error(errno),
                });
            }
        }
        Ok(Listener { sock, group, buf })
    }

    /// Wait (up to five seconds) for packets, and return the sources of what arrived.
    pub fn receive(&mut self) -> Result<Received, NetlinkError> {
        match recv_from(&self.sock, &mut self.buf, 0) {
            Ok((n, 0)) => Ok(Received::Sources(sources(&self.buf[..n], self.group))),
            Ok(_) => Ok(Received::Sources(Vec::new())),
            Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => Ok(Received::Lost),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) =>
            {
                Ok(Received::Sources(Vec::new()))
            }
            Err(e) => Err(NetlinkError::Socket(e)),
        }
    }

    /// Sources already queued, without waiting: a burst is handled as one. At most
    /// [`DRAIN_MAX`] of them, so that a stream of bans that never pauses is still cut in
    /// batches rather than only read.
    pub fn drain(&mut self) -> Result<Received, NetlinkError> {
        let mut out = Vec::new();
        while out.len() < DRAIN_MAX {
            match recv_from(&self.sock, &mut self.buf, libc::MSG_DONTWAIT) {
                Ok((n, 0)) => out.extend(sources(&self.buf[..n], self.group)),
                Ok(_) => {}
                Err(e) => match e.raw_os_error() {
                    Some(libc::ENOBUFS) => return Ok(Received::Lost),
                    Some(libc::EAGAIN) | Some(libc::EINTR) => break,
                    _ => return Err(NetlinkError::Socket(e)),
                },
            }
        }
        Ok(Received::Sources(out))
    }
}

/// One `recvfrom` with `flags`: the bytes and the sender's port id (0 for the kernel).
fn recv_from(sock: &Socket, buf: &mut [u8], flags: libc::c_int) -> io::Result<(usize, u32)> {
    // SAFETY: buf is valid for writes of its length; addr and len describe a sockaddr_nl.
    let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t;
    let n = unsafe {
        libc::recvfrom(
            sock.fd,
            buf.as_mut_ptr() as *mut libc::c_void,
            buf.len(),
            flags,
            &mut addr as *mut libc::sockaddr_nl as *mut libc::sockaddr,
            &mut len,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((n as usize, addr.nl_pid))
}

/// The errno of the acknowledgement in `buf`, if it holds one (0: success).
fn ack(buf: &[u8]) -> Option<i32> {
    messages(buf).find_map(|(ty, body)| {
        (ty == NLMSG_ERROR && body.len() >= 4)
            .then(|| -i32::from_ne_bytes(body[..4].try_into().unwrap()))
    })
}

/// The netlink messages in `buf`: (type, body after the header). Stops at the first
/// malformed one.
fn messages(mut buf: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        if buf.len() < 16 {
            return None;
        }
        let len = u32::from_ne_bytes(buf[..4].try_into().unwrap()) as usize;
        if len < 16 || len > buf.len() {
            return None;
        }
        let ty = u16::from_ne_bytes([buf[4], buf[5]]);
        let body = &buf[16..len];
        buf = &buf[((len + 3) & !3).min(buf.len())..];
        Some((ty, body))
    })
}

/// The source addresses of the logged packets of `group` in a received buffer. A message of
/// another type or group, a family other than IPv4 and IPv6, a payload whose IP version is
/// not its family's or that is too short to hold the source address: skipped. Also stops at
/// an overrun notice (the caller learns of the loss from the socket's error).
pub fn sources(buf: &[u8], group: u16) -> Vec<IpAddr> {
    let mut out = Vec::new();
    for (ty, body) in messages(buf) {
        if ty == NLMSG_OVERRUN {
            break;
        }
        if ty != ((NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_PACKET) || body.len() < 4 {
            continue;
        }
        let family = body[0];
        if u16::from_be_bytes([body[2], body[3]]) != group {
            continue;
        }
        let Some(payload) = attrs(&body[4..])
            .find(|(t, _)| *t == NFULA_PAYLOAD)
            .map(|(_, p)| p)
        else {
            continue;
        };
        let version = payload.first().map(|b| b >> 4);
        let src = match (family, version) {
            (AF_INET, Some(4)) if payload.len() >= 20 => {
                let b: [u8; 4] = payload[12..16].try_into().unwrap();
                IpAddr::V4(Ipv4Addr::from(b))
            }
            (AF_INET6, Some(6)) if payload.len() >= 40 => {
                let b: [u8; 16] = payload[8..24].try_into().unwrap();
                IpAddr::V6(Ipv6Addr::from(b))
            }
            _ => continue,
        };
        out.push(src);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A logged packet as the kernel sends it: header, nfgenmsg, a packet header attribute,
    /// the payload.
    fn packet(family: u8, group: u16, payload: &[u8]) -> Vec<u8> {
        let mut m = Msg::new(
            (NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_PACKET,
            0,
            0,
            family,
            group,
        );
        m.attr(1, &[0x08, 0x00, 1, 0]);
        m.attr(NFULA_PAYLOAD, payload);
        m.finish()
    }

    fn ipv4(src: [u8; 4]) -> Vec<u8> {
        let mut h = vec![0u8; 20];
        h[0] = 0x45;
        h[12..16].copy_from_slice(&src);
        h[16..20].copy_from_slice(&[192, 0, 2, 1]);
        h
    }

    fn ipv6(src: Ipv6Addr) -> Vec<u8> {
        let mut h = vec![0u8; 40];
        h[0] = 0x60;
        h[8..24].copy_from_slice(&src.octets());
        h
    }

    #[test]
    fn sources_of_logged_packets() {
        let v6: Ipv6Addr = "2001:db8:6::99".parse().unwrap();
        let mut buf = packet(AF_INET, 7, &ipv4([203, 0, 113, 11]));
        buf.extend(packet(AF_INET6, 7, &ipv6(v6)));
        assert_eq!(
            sources(&buf, 7),
            vec![IpAddr::V4(Ipv4Addr::new(203, 0, 113, 11)), IpAddr::V6(v6)]
        );
    }

    #[test]
    fn what_is_not_a_whole_source_of_the_group_is_skipped() {
        let good = packet(AF_INET, 7, &ipv4([203, 0, 113, 11]));
        // Another group, a short payload, a version that is not the family's, another family.
        for bad in [
            packet(AF_INET, 8, &ipv4([198, 51, 100, 1])),
            packet(AF_INET, 7, &ipv4([198, 51, 100, 1])[..15]),
            packet(AF_INET, 7, &ipv6("2001:db8::1".parse().unwrap())),
            packet(AF_INET6, 7, &ipv4([198, 51, 100, 1])),
            packet(7, 7, &ipv4([198, 51, 100, 1])),
        ] {
            let mut buf = bad.clone();
            buf.extend(&good);
            assert_eq!(
                sources(&buf, 7),
                vec![IpAddr::V4(Ipv4Addr::new(203, 0, 113, 11))],
                "{bad:?}"
            );
        }
        // A length running past the buffer ends the parse; nothing after it is read.
        let mut cut = good.clone();
        cut[0] = 200;
        assert!(sources(&cut, 7).is_empty());
        assert!(sources(&[], 7).is_empty());
    }
}
