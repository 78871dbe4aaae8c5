//! Who is at the other end of a local socket: the kernel's word for it (`SO_PEERCRED` and
//! `SO_PEERGROUPS`), taken when the peer connected, so it can be neither forged by what the
//! peer sends nor changed by what the peer does after (exec a set-id program, exit and let its
//! pid be reused). The control socket decides a caller's role from it.
#![allow(unsafe_code)] // two getsockopt calls, each on a buffer sized for what it receives

use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;

/// A peer's credentials when it connected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// Its process (for logs only: a pid can be reused).
    pub pid: i32,
    /// Its effective user.
    pub uid: u32,
    /// Its effective group.
    pub gid: u32,
    /// Its supplementary groups.
    pub groups: Vec<u32>,
}

impl Peer {
    /// Whether the peer is in group `gid` (its own group or a supplementary one).
    pub fn in_group(&self, gid: u32) -> bool {
        self.gid == gid || self.groups.contains(&gid)
    }
}

/// The credentials of `stream`'s peer.
pub fn credentials(stream: &UnixStream) -> std::io::Result<Peer> {
    let fd = stream.as_raw_fd();
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `cred` is a writable `ucred` and `len` its size, as SO_PEERCRED fills.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(Peer {
        pid: cred.pid,
        uid: cred.uid,
        gid: cred.gid,
        groups: groups(fd)?,
    })
}

/// `SO_PEERGROUPS` (Linux 4.13): the buffer grows to what the kernel says it needs (a user
/// has at most 65,536 groups).
fn groups(fd: std::os::fd::RawFd) -> std::io::Result<Vec<u32>> {
    let mut buf: Vec<libc::gid_t> = vec![0; 64];
    loop {
        let mut len = std::mem::size_of_val(buf.as_slice()) as libc::socklen_t;
        // SAFETY: `buf` holds `len` writable bytes; the kernel writes at most `len` and says how
        // many it wrote (or needs) in `len`.
        let rc = unsafe {
            libc::getsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_PEERGROUPS,
                buf.as_mut_ptr().cast(),
                &mut len,
            )
        };
        let need = len as usize / std::mem::size_of::<libc::gid_t>();
        if rc == 0 {
            buf.truncate(need);
            return Ok(buf);
        }
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::ERANGE) && need > buf.len() && need <= 65_536 {
            buf.resize(need, 0);
            continue;
        }
        return Err(e);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_peer_is_seen_as_it_is() {
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        let p = super::credentials(&a).unwrap();
        assert_eq!(p.pid, std::process::id() as i32);
        assert_eq!(p.uid, rustix_free_uid());
        assert!(p.in_group(p.gid));
    }

    fn rustix_free_uid() -> u32 {
        std::fs::read_to_string("/proc/self/status")
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .unwrap()
            .parse()
            .unwrap()
    }
}
