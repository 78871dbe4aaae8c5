//! nf_tables over nfnetlink, without spawning `nft`: incremental set-element updates here, the
//! whole ruleset's load in [`ruleset`], conntrack's flow cut in [`conntrack`], the sources the
//! kernel tiers ban in [`nflog`].
//!
//! One element added by a `nft` process costs ~4 ms; over netlink it costs ~0.1–0.2 ms, and a
//! `nft add element` on a 100k-element interval set costs over a second because the tool reads
//! the whole set back (KERNEL-TESTING.md). The messages are encoded here by hand rather than
//! through libnftnl: a set-element batch is a few dozen bytes per element, and this keeps the
//! backend free of C libraries while giving exact control over per-element timeouts and
//! interval-end markers (the safe `nftnl` crate has neither).
//!
//! Each call opens its own socket, sends the elements in batches (each batch is one kernel
//! transaction; batches are kept under [`MAX_BATCH_BYTES`] so that one `sendto` carries each),
//! and waits for the kernel's acknowledgement of every message.
#![allow(unsafe_code)] // socket(2), bind(2), sendto(2), recv(2) and setsockopt(2) through libc.

pub mod conntrack;
pub mod nflog;
pub mod ruleset;

use std::io;
use std::time::Duration;

use pbxfw_core::Family;

const NETLINK_NETFILTER: i32 = 12;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_CREATE: u16 = 0x400;
const NLMSG_ERROR: u16 = 0x2;
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;
const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFT_MSG_NEWSETELEM: u16 = 12;
const NFT_MSG_DELSETELEM: u16 = 14;
const NFPROTO_INET: u8 = 1;
const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
const NFTA_SET_ELEM_LIST_SET: u16 = 2;
const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_SET_ELEM_KEY: u16 = 1;
const NFTA_SET_ELEM_FLAGS: u16 = 3;
const NFTA_SET_ELEM_TIMEOUT: u16 = 4;
const NFTA_DATA_VALUE: u16 = 1;
const NFT_SET_ELEM_INTERVAL_END: u32 = 1;
const NLA_F_NESTED: u16 = 0x8000;

/// Largest batch sent in one `sendto` (one netlink page, as libmnl uses).
pub const MAX_BATCH_BYTES: usize = 128 * 1024;
/// Largest set-element message: the element list is one attribute, whose length is 16 bits.
const MAX_MESSAGE_BYTES: usize = 60 * 1024;

pub use pbxfw_core::{Element, Op};

/// The shape of the target set, which decides how elements are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetShape {
    /// A hash set: one key per element.
    Hash,
    /// An interval set: a start key and an interval-end key per element.
    Interval,
}

/// What went wrong talking to the kernel.
#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    /// The socket could not be opened or used.
    #[error("netlink socket: {0}")]
    Socket(#[source] io::Error),
    /// The kernel refused a batch (the whole batch changed nothing).
    #[error("the kernel refused the update of set {set}: {source}")]
    Refused {
        /// The set.
        set: String,
        /// errno from the kernel.
        #[source]
        source: io::Error,
    },
}

struct Socket {
    fd: i32,
    /// Where it was opened: a socket talks to the namespace it was opened in, and a forked
    /// child shares its parent's (the spare is reused only where both still hold).
    owner: (u32, u64),
    /// The socket's inode: a program embedding the library may close every descriptor (after
    /// a fork, say) and open others under the same numbers; a descriptor that is no longer
    /// this socket is neither used nor closed.
    ino: u64,
}

/// The inode behind descriptor `fd`, if it is open.
fn fd_ino(fd: i32) -> Option<u64> {
    // SAFETY: fstat(2) writes a `stat` we own; a closed descriptor is an error, not UB.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    (unsafe { libc::fstat(fd, &mut st) } == 0).then_some(st.st_ino)
}

thread_local! {
    /// The socket of the thread's last complete exchange, kept for its next one.
    ///
    /// Closing an nf_tables socket waits until the objects of the namespace's last
    /// transaction are freed, and the kernel frees them only after an RCU grace period (about
    /// 10 ms on an idle 2-vCPU machine) when that transaction deleted anything: a reload
    /// replacing its static sets, a flush, an unban. Reusing one socket lets that wait run
    /// beside the work after the load (verification, the records) instead of in front of it,
    /// at the process's exit at the latest.
    static SPARE: std::cell::Cell<Option<Socket>> = const { std::cell::Cell::new(None) };
}

/// This process and the calling thread's network namespace.
fn owner() -> (u32, u64) {
    use std::os::unix::fs::MetadataExt;
    let ns = std::fs::metadata("/proc/thread-self/ns/net").map_or(0, |m| m.ino());
    (std::process::id(), ns)
}

impl Socket {
    /// The thread's spare socket when it was opened here (this process, this namespace),
    /// else a new one.
    fn open() -> io::Result<Socket> {
        let owner = owner();
        // `try_with`: a host program may call in while the thread's storage is torn down.
        if let Some(s) = SPARE.try_with(|c| c.take()).ok().flatten() {
            if s.owner == owner && owner.1 != 0 && fd_ino(s.fd) == Some(s.ino) {
                return Ok(s);
            }
        }
        Self::open_new(owner)
    }

    /// Keep this socket for the thread's next exchange. Only after a complete exchange: every
    /// reply read, nothing left that the next one could take for its own.
    fn park(self) {
        let mut slot = Some(self);
        let _ = SPARE.try_with(|c| drop(c.replace(slot.take())));
    }

    fn open_new(owner: (u32, u64)) -> io::Result<Socket> {
        // SAFETY: plain socket(2) call; the descriptor is owned by the returned value.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                NETLINK_NETFILTER,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let s = Socket {
            fd,
            owner,
            ino: fd_ino(fd).unwrap_or(0),
        };
        // SAFETY: a zeroed sockaddr_nl is a valid "any" address; sizes are exact.
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as u16;
        let rc = unsafe {
            libc::bind(
                fd,
                &addr as *const libc::sockaddr_nl as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_nl>() as u32,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        let tv = libc::timeval {
            tv_sec: 5,
            tv_usec: 0,
        };
        // SAFETY: SO_RCVTIMEO takes a timeval; the pointer and size describe `tv`.
        let rc = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                &tv as *const libc::timeval as *const libc::c_void,
                std::mem::size_of::<libc::timeval>() as u32,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(s)
    }

    fn send(&self, buf: &[u8]) -> io::Result<()> {
        // SAFETY: a zeroed sockaddr_nl addresses the kernel (pid 0); buf is valid for its length.
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as u16;
        let n = unsafe {
            libc::sendto(
                self.fd,
                buf.as_ptr() as *const libc::c_void,
                buf.len(),
                0,
                &addr as *const libc::sockaddr_nl as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_nl>() as u32,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        if n as usize != buf.len() {
            return Err(io::Error::other("short netlink send"));
        }
        Ok(())
    }

    /// Raise a buffer (`SO_SNDBUFFORCE`, `SO_RCVBUFFORCE`: root may exceed the sysctl
    /// maximum) to `bytes`; one already as large is left as it is (a reused socket keeps what
    /// an earlier, larger exchange needed, and never drops below the kernel's default, which
    /// the exchanges that raise nothing rely on).
    fn grow_buffer(&self, option: libc::c_int, bytes: usize) -> io::Result<()> {
        let v: libc::c_int = bytes.min(i32::MAX as usize / 2) as libc::c_int;
        let read = match option {
            libc::SO_SNDBUFFORCE => libc::SO_SNDBUF,
            _ => libc::SO_RCVBUF,
        };
        let mut now: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: both options return an int; the pointers describe `now` and its size.
        let rc = unsafe {
            libc::getsockopt(
                self.fd,
                libc::SOL_SOCKET,
                read,
                &mut now as *mut libc::c_int as *mut libc::c_void,
                &mut len,
            )
        };
        // The kernel reports (and reserves) twice what was asked.
        if rc == 0 && now / 2 >= v {
            return Ok(());
        }
        // SAFETY: both options take an int; the pointer and size describe `v`.
        let rc = unsafe {
            libc::setsockopt(
                self.fd,
                libc::SOL_SOCKET,
                option,
                &v as *const libc::c_int as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as u32,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: buf is valid for writes of its length.
        let n = unsafe { libc::recv(self.fd, buf.as_mut_ptr() as *mut libc::c_void, buf.len(), 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }
}

impl Drop for Socket {
    fn drop(&mut self) {
        if fd_ino(self.fd) == Some(self.ino) {
            // SAFETY: the descriptor is still the socket we opened.
            unsafe { libc::close(self.fd) };
        }
    }
}

/// A netlink message being built; attributes are appended with 4-byte alignment.
struct Msg {
    buf: Vec<u8>,
    nests: Vec<usize>,
}

impl Msg {
    fn new(msg_type: u16, flags: u16, seq: u32, family: u8, res_id: u16) -> Msg {
        let mut buf = Vec::with_capacity(256);
        buf.extend_from_slice(&0u32.to_ne_bytes()); // length, patched in finish()
        buf.extend_from_slice(&msg_type.to_ne_bytes());
        buf.extend_from_slice(&flags.to_ne_bytes());
        buf.extend_from_slice(&seq.to_ne_bytes());
        buf.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel fills it in
        buf.push(family); // nfgenmsg
        buf.push(0); // version NFNETLINK_V0
        buf.extend_from_slice(&res_id.to_be_bytes());
        Msg {
            buf,
            nests: Vec::new(),
        }
    }

    fn pad(&mut self) {
        while self.buf.len() % 4 != 0 {
            self.buf.push(0);
        }
    }

    fn attr(&mut self, t: u16, data: &[u8]) {
        // A length that wrapped would make the kernel read the rest of the value as
        // attributes of its own: the callers' limits (names, comments, message sizes) keep far
        // below, and this keeps it so.
        let len = u16::try_from(4 + data.len()).expect("a netlink attribute over 64 KiB");
        self.buf.extend_from_slice(&len.to_ne_bytes());
        self.buf.extend_from_slice(&t.to_ne_bytes());
        self.buf.extend_from_slice(data);
        self.pad();
    }

    fn begin(&mut self, t: u16) {
        self.nests.push(self.buf.len());
        self.buf.extend_from_slice(&0u16.to_ne_bytes());
        self.buf
            .extend_from_slice(&(t | NLA_F_NESTED).to_ne_bytes());
    }

    /// A data attribute: `t` nesting one `NFTA_DATA_VALUE` (what nf_tables expressions take
    /// their constants as).
    fn data(&mut self, t: u16, value: &[u8]) {
        self.begin(t);
        self.attr(NFTA_DATA_VALUE, value);
        self.end();
    }

    fn end(&mut self) {
        let start = self.nests.pop().expect("balanced nests");
        let len = u16::try_from(self.buf.len() - start).expect("a netlink nest over 64 KiB");
        self.buf[start..start + 2].copy_from_slice(&len.to_ne_bytes());
    }

    fn finish(mut self) -> Vec<u8> {
        self.pad();
        let len = self.buf.len() as u32;
        self.buf[0..4].copy_from_slice(&len.to_ne_bytes());
        self.buf
    }
}

fn cstr(s: &str) -> Vec<u8> {
    let mut v = s.as_bytes().to_vec();
    v.push(0);
    v
}

fn key_bytes(family: Family, value: u128) -> Vec<u8> {
    match family {
        Family::Ipv4 => (value as u32).to_be_bytes().to_vec(),
        Family::Ipv6 => value.to_be_bytes().to_vec(),
    }
}

/// The encoded list elements of one element (two for an interval).
fn encode_element(m: &mut Msg, e: &Element, shape: SetShape) -> Result<(), NetlinkError> {
    let key = |m: &mut Msg, value: u128, flags: Option<u32>, timeout: Option<Duration>| {
        m.begin(NFTA_LIST_ELEM);
        m.begin(NFTA_SET_ELEM_KEY);
        m.attr(NFTA_DATA_VALUE, &key_bytes(e.prefix.family(), value));
        m.end();
        if let Some(f) = flags {
            m.attr(NFTA_SET_ELEM_FLAGS, &f.to_be_bytes());
        }
        if let Some(t) = timeout {
            m.attr(NFTA_SET_ELEM_TIMEOUT, &(t.as_millis() as u64).to_be_bytes());
        }
        m.end();
    };
    match shape {
        SetShape::Hash => key(m, e.prefix.start(), None, e.timeout),
        SetShape::Interval => {
            key(m, e.prefix.start(), None, e.timeout);
            // An interval that reaches the top of the address space has no end marker (there
            // is no address after it): the kernel reads a last start as open to the end, and
            // `nft` writes `128.0.0.0/1` so too.
            if let Some(end) = e
                .prefix
                .end()
                .checked_add(1)
                .filter(|v| *v <= e.prefix.family().max_value())
            {
                key(m, end, Some(NFT_SET_ELEM_INTERVAL_END), None);
            }
        }
    }
    Ok(())
}

/// One change to one set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The set.
    pub set: String,
    /// Its shape.
    pub shape: SetShape,
    /// Add or remove.
    pub op: Op,
    /// The elements, all of the set's family.
    pub elements: Vec<Element>,
}

/// Add or remove `elements` in `table`'s `set` (family inet). All elements must be of the set's
/// family. See [`apply_changes`] for how batches are formed.
pub fn update_set(
    table: &str,
    set: &str,
    shape: SetShape,
    op: Op,
    elements: &[Element],
) -> Result<(), NetlinkError> {
    apply_changes(
        table,
        &[Change {
            set: set.into(),
            shape,
            op,
            elements: elements.to_vec(),
        }],
    )
}

/// Apply changes in order. Changes that fit in one batch ([`MAX_BATCH_BYTES`]) are one kernel
/// transaction, so a removal and an addition that replace each other never leave a gap; when a
/// batch fails, its changes are all undone and the error names the set. Larger updates are
/// split into several transactions; those already committed stay.
pub fn apply_changes(table: &str, changes: &[Change]) -> Result<(), NetlinkError> {
    let sock = Socket::open().map_err(NetlinkError::Socket)?;
    let mut seq: u32 = 1;
    let messages = change_messages(table, changes)?;
    let mut rest = &messages[..];
    while !rest.is_empty() {
        let mut batch = batch_mark(NFNL_MSG_BATCH_BEGIN, seq);
        seq += 1;
        let mut acks = Vec::new();
        let mut sets = Vec::new();
        let mut used = 0;
        for (ci, m) in rest {
            if used > 0 && batch.len() + m.len() + 32 > MAX_BATCH_BYTES {
                break;
            }
            let mut m = m.clone();
            m[8..12].copy_from_slice(&seq.to_ne_bytes());
            batch.extend_from_slice(&m);
            acks.push(seq);
            sets.push(changes[*ci].set.clone());
            seq += 1;
            used += 1;
        }
        rest = &rest[used..];
        batch.extend_from_slice(&batch_mark(NFNL_MSG_BATCH_END, seq));
        seq += 1;
        let last = ack_last_only(&mut batch).unwrap_or(acks[acks.len() - 1]);
        sock.send(&batch).map_err(NetlinkError::Socket)?;
        let first_seq = acks[0];
        wait_acks(&sock, last).map_err(|(failed_seq, source)| {
            match (failed_seq, source.kind()) {
                (Some(fs), _) => NetlinkError::Refused {
                    // A refusal of the batch header itself (not root) names no set.
                    set: sets
                        .get(fs.wrapping_sub(first_seq) as usize)
                        .cloned()
                        .unwrap_or_else(|| "(the batch)".to_string()),
                    source,
                },
                _ => NetlinkError::Socket(source),
            }
        })?;
    }
    sock.park();
    Ok(())
}

/// Empty each of `flush` (sets of `table`), then apply `changes` in order, all in **one**
/// kernel transaction whatever its size: packets see the sets as they were or as they end,
/// never empty or half written, and a refusal changes nothing. The batch is sent in one
/// `sendto` (the socket's send buffer raised to fit, as `nft` does for large batches).
pub fn apply_atomic(table: &str, flush: &[String], changes: &[Change]) -> Result<(), NetlinkError> {
    let sock = Socket::open().map_err(NetlinkError::Socket)?;
    let mut batch = batch_mark(NFNL_MSG_BATCH_BEGIN, 1);
    let mut seq: u32 = 2;
    let mut acks = Vec::new();
    let mut sets: Vec<&str> = Vec::new();
    for set in flush {
        // A DELSETELEM without an element list empties the set (`nft flush set`).
        let mut m = Msg::new(
            (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_DELSETELEM,
            NLM_F_REQUEST | NLM_F_ACK,
            seq,
            NFPROTO_INET,
            0,
        );
        m.attr(NFTA_SET_ELEM_LIST_TABLE, &cstr(table));
        m.attr(NFTA_SET_ELEM_LIST_SET, &cstr(set));
        batch.extend_from_slice(&m.finish());
        acks.push(seq);
        sets.push(set);
        seq += 1;
    }
    for (ci, mut m) in change_messages(table, changes)? {
        m[8..12].copy_from_slice(&seq.to_ne_bytes());
        batch.extend_from_slice(&m);
        acks.push(seq);
        sets.push(&changes[ci].set);
        seq += 1;
    }
    if acks.is_empty() {
        return Ok(());
    }
    batch.extend_from_slice(&batch_mark(NFNL_MSG_BATCH_END, seq));
    let first_seq = acks[0];
    send_acked(&sock, &mut batch, &acks).map_err(|(failed_seq, source)| match failed_seq {
        Some(fs) => NetlinkError::Refused {
            set: sets
                .get(fs.wrapping_sub(first_seq) as usize)
                .unwrap_or(&"(the batch)")
                .to_string(),
            source,
        },
        None => NetlinkError::Socket(source),
    })?;
    sock.park();
    Ok(())
}

/// Send `batch` (begun and ended; its messages numbered `acks`, at least one) in one `sendto`
/// and wait until the kernel acknowledges it ([`ack_last_only`]): the socket's buffers are
/// raised to fit, as `nft` does for large batches (each reply is counted at its buffer's true
/// size, about a kilobyte, against the receive buffer: without room the replies of a batch
/// that committed are lost, ENOBUFS).
fn send_acked(
    sock: &Socket,
    batch: &mut [u8],
    acks: &[u32],
) -> Result<(), (Option<u32>, io::Error)> {
    sock.grow_buffer(libc::SO_SNDBUFFORCE, batch.len() + 4096)
        .map_err(|e| (None, e))?;
    // Room for an error per message (a refused message is answered whatever the flag).
    sock.grow_buffer(libc::SO_RCVBUFFORCE, (acks.len() + 16) * 2048)
        .map_err(|e| (None, e))?;
    let last = ack_last_only(batch).unwrap_or(acks[acks.len() - 1]);
    sock.send(batch).map_err(|e| (None, e))?;
    wait_acks(sock, last)
}

/// Send `messages` (sequence numbers still to be written) as **one** batch, one kernel
/// transaction, whatever its size. On a refusal, the index of the refused message.
pub(crate) fn send_batch(messages: &[&[u8]]) -> Result<(), (Option<usize>, io::Error)> {
    let sock = Socket::open().map_err(|e| (None, e))?;
    // One allocation: a 100,000-element load is megabytes.
    let total: usize = messages.iter().map(|m| m.len()).sum();
    let mut batch = Vec::with_capacity(total + 64);
    batch.extend_from_slice(&batch_mark(NFNL_MSG_BATCH_BEGIN, 1));
    let first_seq: u32 = 2;
    let mut seq = first_seq;
    let mut acks = Vec::new();
    for m in messages.iter().copied() {
        let at = batch.len();
        batch.extend_from_slice(m);
        batch[at + 8..at + 12].copy_from_slice(&seq.to_ne_bytes());
        acks.push(seq);
        seq += 1;
    }
    if acks.is_empty() {
        return Ok(());
    }
    batch.extend_from_slice(&batch_mark(NFNL_MSG_BATCH_END, seq));
    send_acked(&sock, &mut batch, &acks)
        .map_err(|(failed, e)| (failed.map(|s| s.wrapping_sub(first_seq) as usize), e))?;
    sock.park();
    Ok(())
}

/// The message that begins (`NFNL_MSG_BATCH_BEGIN`) or ends (`NFNL_MSG_BATCH_END`) a batch.
fn batch_mark(kind: u16, seq: u32) -> Vec<u8> {
    Msg::new(kind, NLM_F_REQUEST, seq, 0, NFNL_SUBSYS_NFTABLES).finish()
}

/// The set-element messages of `changes` (sequence numbers still to be written), each with the
/// index of its change: as many messages per change as its elements need.
fn change_messages(table: &str, changes: &[Change]) -> Result<Vec<(usize, Vec<u8>)>, NetlinkError> {
    let mut messages: Vec<(usize, Vec<u8>)> = Vec::new();
    for (ci, c) in changes.iter().enumerate() {
        let msg_type = (NFNL_SUBSYS_NFTABLES << 8)
            | match c.op {
                Op::Add => NFT_MSG_NEWSETELEM,
                Op::Remove => NFT_MSG_DELSETELEM,
            };
        let flags = match c.op {
            Op::Add => NLM_F_REQUEST | NLM_F_CREATE | NLM_F_ACK,
            Op::Remove => NLM_F_REQUEST | NLM_F_ACK,
        };
        let mut pending = &c.elements[..];
        while !pending.is_empty() {
            let mut m = Msg::new(msg_type, flags, 0, NFPROTO_INET, 0);
            m.attr(NFTA_SET_ELEM_LIST_TABLE, &cstr(table));
            m.attr(NFTA_SET_ELEM_LIST_SET, &cstr(&c.set));
            m.begin(NFTA_SET_ELEM_LIST_ELEMENTS);
            let mut used = 0;
            for e in pending {
                if m.buf.len() > MAX_MESSAGE_BYTES - 128 {
                    break;
                }
                encode_element(&mut m, e, c.shape)?;
                used += 1;
            }
            m.end();
            pending = &pending[used..];
            messages.push((ci, m.finish()));
        }
    }
    Ok(messages)
}

/// The handle of `table` (family inet), or `None` when there is no such table. Asked over
/// netlink: `nft list tables` reads every set element of the namespace first (2.5 s with a
/// 100,000-element set), and the daemon asks at every tick.
pub fn table_handle(table: &str) -> Result<Option<u64>, NetlinkError> {
    const NFT_MSG_GETTABLE: u16 = 1;
    const NFTA_TABLE_NAME: u16 = 1;
    const NFTA_TABLE_HANDLE: u16 = 4;
    let sock = Socket::open().map_err(NetlinkError::Socket)?;
    let mut m = Msg::new(
        (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETTABLE,
        NLM_F_REQUEST | NLM_F_ACK,
        1,
        NFPROTO_INET,
        0,
    );
    m.attr(NFTA_TABLE_NAME, &cstr(table));
    sock.send(&m.finish()).map_err(NetlinkError::Socket)?;
    let mut buf = vec![0u8; 16 * 1024];
    let mut handle = None;
    loop {
        let n = sock.recv(&mut buf).map_err(NetlinkError::Socket)?;
        let mut off = 0;
        while off + 16 <= n {
            let len = u32::from_ne_bytes(buf[off..off + 4].try_into().unwrap()) as usize;
            let ty = u16::from_ne_bytes(buf[off + 4..off + 6].try_into().unwrap());
            if len < 16 || off + len > n {
                return Err(NetlinkError::Socket(io::Error::other(
                    "malformed netlink reply",
                )));
            }
            if ty == NLMSG_ERROR && len >= 20 {
                let err = i32::from_ne_bytes(buf[off + 16..off + 20].try_into().unwrap());
                // The acknowledgement (or the error) ends the exchange.
                sock.park();
                return match err {
                    0 => Ok(handle),
                    e if -e == libc::ENOENT => Ok(None),
                    e => Err(NetlinkError::Socket(io::Error::from_raw_os_error(-e))),
                };
            }
            // The table: attributes after the netlink and nfgen headers (16 + 4 bytes).
            let mut a = off + 20;
            while a + 4 <= off + len {
                let alen = u16::from_ne_bytes(buf[a..a + 2].try_into().unwrap()) as usize;
                let atype = u16::from_ne_bytes(buf[a + 2..a + 4].try_into().unwrap()) & 0x3fff;
                if alen < 4 || a + alen > off + len {
                    break;
                }
                if atype == NFTA_TABLE_HANDLE && alen == 12 {
                    handle = Some(u64::from_be_bytes(buf[a + 4..a + 12].try_into().unwrap()));
                }
                a += (alen + 3) & !3;
            }
            off += (len + 3) & !3;
        }
    }
}

/// The keys of the elements of `set` in `table` (family inet), or `None` when there is no
/// such table or set. For small sets (the fingerprint's one element): a dump of a large set
/// would be read whole.
pub fn set_keys(table: &str, set: &str) -> Result<Option<Vec<Vec<u8>>>, NetlinkError> {
    interrupted_again(|| set_keys_once(table, set))
}

/// `dump` read again when the kernel marks it interrupted (`EINTR`), up to three times in all.
pub(crate) fn interrupted_again<T>(
    mut dump: impl FnMut() -> Result<T, NetlinkError>,
) -> Result<T, NetlinkError> {
    let mut tries = 0;
    loop {
        tries += 1;
        match dump() {
            Err(NetlinkError::Socket(e)) if e.raw_os_error() == Some(libc::EINTR) && tries < 3 => {}
            other => return other,
        }
    }
}

fn set_keys_once(table: &str, set: &str) -> Result<Option<Vec<Vec<u8>>>, NetlinkError> {
    let sock = set_dump(table, set)?;
    let mut buf = vec![0u8; 64 * 1024];
    let mut keys = Vec::new();
    loop {
        let n = sock.recv(&mut buf).map_err(NetlinkError::Socket)?;
        match set_keys_reply(&buf[..n], &mut keys)? {
            // A small set's: more is no set this reads.
            Reply::More if keys.len() > 64 => {
                return Err(NetlinkError::Socket(io::Error::other(format!(
                    "set {set}: more elements than a small set holds"
                ))))
            }
            Reply::More => {}
            Reply::Done => {
                sock.park();
                return Ok(Some(keys));
            }
            Reply::NoSuchSet => {
                sock.park();
                return Ok(None);
            }
        }
    }
}

/// A socket that has asked for a dump of the elements of `set` in `table` (family inet).
fn set_dump(table: &str, set: &str) -> Result<Socket, NetlinkError> {
    const NFT_MSG_GETSETELEM: u16 = 13;
    const NLM_F_DUMP: u16 = 0x300;
    let sock = Socket::open().map_err(NetlinkError::Socket)?;
    let mut m = Msg::new(
        (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETSETELEM,
        NLM_F_REQUEST | NLM_F_DUMP,
        1,
        NFPROTO_INET,
        0,
    );
    m.attr(NFTA_SET_ELEM_LIST_TABLE, &cstr(table));
    m.attr(NFTA_SET_ELEM_LIST_SET, &cstr(set));
    sock.send(&m.finish()).map_err(NetlinkError::Socket)?;
    Ok(sock)
}

/// Where a dump stands after one datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    /// More datagrams follow.
    More,
    /// The dump is complete.
    Done,
    /// No such table or set.
    NoSuchSet,
}

/// Every element of `set` in `table` (family inet) as prefixes of `family`: a hash set's keys
/// as addresses, an interval set's start and end keys paired into ranges. `None` when there is
/// no such table or set; an error past `max` elements. One netlink dump: `nft list set` would
/// read every element of the namespace first (tens of milliseconds beside a 100,000-entry
/// blacklist).
pub fn set_prefixes(
    table: &str,
    set: &str,
    family: Family,
    max: usize,
) -> Result<Option<Vec<pbxfw_core::Prefix>>, NetlinkError> {
    interrupted_again(|| set_prefixes_once(table, set, family, max))
}

fn set_prefixes_once(
    table: &str,
    set: &str,
    family: Family,
    max: usize,
) -> Result<Option<Vec<pbxfw_core::Prefix>>, NetlinkError> {
    let sock = set_dump(table, set)?;
    let mut buf = vec![0u8; 64 * 1024];
    let mut elements = Vec::new();
    loop {
        let n = sock.recv(&mut buf).map_err(NetlinkError::Socket)?;
        let reply = set_elements_reply(&buf[..n], &mut elements)?;
        if elements.len() > max {
            return Err(NetlinkError::Socket(io::Error::other(format!(
                "set {set}: more than {max} elements"
            ))));
        }
        match reply {
            Reply::More => {}
            Reply::Done => {
                sock.park();
                return Ok(Some(element_prefixes(family, elements)));
            }
            Reply::NoSuchSet => {
                sock.park();
                return Ok(None);
            }
        }
    }
}

/// Dumped elements as prefixes (see [`set_prefixes`]); keys of another length are skipped.
fn element_prefixes(family: Family, mut elements: Vec<(Vec<u8>, u32)>) -> Vec<pbxfw_core::Prefix> {
    let value = |k: &[u8]| -> Option<u128> {
        match family {
            Family::Ipv4 => Some(u32::from_be_bytes(k.try_into().ok()?) as u128),
            Family::Ipv6 => Some(u128::from_be_bytes(k.try_into().ok()?)),
        }
    };
    let mut keyed: Vec<(u128, bool)> = elements
        .drain(..)
        .filter_map(|(k, flags)| Some((value(&k)?, flags & NFT_SET_ELEM_INTERVAL_END != 0)))
        .collect();
    if !keyed.iter().any(|(_, end)| *end) {
        return keyed
            .into_iter()
            .map(|(v, _)| pbxfw_core::Prefix::host(pbxfw_core::value_addr(family, v)))
            .collect();
    }
    // An interval set holds each range as its first address and, flagged, the address after
    // its last (none for a range that runs to the end of the family's space).
    keyed.sort_unstable();
    let mut out = Vec::new();
    let mut start: Option<u128> = None;
    for (v, end) in keyed {
        match (end, start) {
            (false, None) => start = Some(v),
            (false, Some(_)) => {}
            (true, Some(s)) if v > s => {
                out.extend(range_prefixes(family, s, v - 1));
                start = None;
            }
            (true, _) => start = None,
        }
    }
    if let Some(s) = start {
        out.extend(range_prefixes(family, s, family.max_value()));
    }
    out
}

fn range_prefixes(family: Family, first: u128, last: u128) -> Vec<pbxfw_core::Prefix> {
    let text = format!(
        "{}-{}",
        pbxfw_core::value_addr(family, first),
        pbxfw_core::value_addr(family, last)
    );
    text.parse::<pbxfw_core::Range>()
        .map(|r| r.prefixes())
        .unwrap_or_default()
}

/// One message of a dump's datagram ([`dump_messages`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DumpMsg<'a> {
    /// An entry: its message type, its nfgen family, and its attributes.
    Entry {
        ty: u16,
        family: u8,
        attributes: &'a [u8],
    },
    /// The end of the dump: `NLMSG_DONE` or `NLMSG_ERROR`, with the error the kernel gives as
    /// a positive error number (0: the dump is complete, as is an `NLMSG_DONE` too short to
    /// carry a code); a code that is no negative error number (positive, or `i32::MIN`) is
    /// `EINVAL`.
    End(i32),
}

/// The messages of one datagram of a dump, read as the kernel's untrusted bytes: every length
/// is checked before it is sliced with; a message whose length lies, an error message too
/// short to hold its code, or an entry too short to hold its nfgen header, is an error
/// (`malformed netlink reply`), and so is a message the kernel marks interrupted (a
/// transaction committed during the dump, so an entry may be missing: `EINTR`, read the dump
/// again); the entries before it are yielded first. Trailing bytes shorter than a header are
/// ignored. The walk stops at the first error and after the end.
pub(crate) fn dump_messages(buf: &[u8]) -> impl Iterator<Item = Result<DumpMsg<'_>, NetlinkError>> {
    const NLMSG_DONE: u16 = 0x3;
    const NLM_F_DUMP_INTR: u16 = 0x10;
    let malformed = || NetlinkError::Socket(io::Error::other("malformed netlink reply"));
    let n = buf.len();
    let mut off = 0;
    let mut over = false;
    std::iter::from_fn(move || {
        if over || off + 16 > n {
            return None;
        }
        let len = u32::from_ne_bytes(buf[off..off + 4].try_into().unwrap()) as usize;
        let ty = u16::from_ne_bytes(buf[off + 4..off + 6].try_into().unwrap());
        let flags = u16::from_ne_bytes(buf[off + 6..off + 8].try_into().unwrap());
        // The kernel's negative error number as a positive one (0: none); one out of range is
        // `EINVAL`.
        let errno = |at: usize| match i32::from_ne_bytes(buf[at..at + 4].try_into().unwrap()) {
            0 => 0,
            c => c.checked_neg().filter(|e| *e > 0).unwrap_or(libc::EINVAL),
        };
        let msg = if len < 16 || len > n - off {
            Err(malformed())
        } else if flags & NLM_F_DUMP_INTR != 0 {
            Err(NetlinkError::Socket(io::Error::from_raw_os_error(
                libc::EINTR,
            )))
        } else {
            match ty {
                // A dump's end carries the dump's own error, when the kernel has room for it.
                NLMSG_DONE if len >= 20 => Ok(DumpMsg::End(errno(off + 16))),
                NLMSG_DONE => Ok(DumpMsg::End(0)),
                NLMSG_ERROR if len >= 20 => Ok(DumpMsg::End(errno(off + 16))),
                NLMSG_ERROR => Err(malformed()),
                _ if len >= 20 => Ok(DumpMsg::Entry {
                    ty,
                    family: buf[off + 16],
                    attributes: &buf[off + 20..off + len],
                }),
                _ => Err(malformed()),
            }
        };
        // Only past an entry is there more to read, and only then is `len` known to fit.
        over = !matches!(msg, Ok(DumpMsg::Entry { .. }));
        if !over {
            off += ((len + 3) & !3).min(n - off);
        }
        Some(msg)
    })
}

/// The error of a dump that ended with `errno` ([`DumpMsg::End`]).
pub(crate) fn dump_error(errno: i32) -> NetlinkError {
    NetlinkError::Socket(io::Error::from_raw_os_error(errno))
}

/// Read one datagram of a set-element dump: the key and flags of each element are appended
/// to `out`. The kernel's reply is checked as untrusted bytes ([`dump_messages`]), and a
/// malformed one is an error. A dump that ends with an error is an error, except `ENOENT`:
/// no such table or set ([`Reply::NoSuchSet`]).
pub fn set_elements_reply(
    buf: &[u8],
    out: &mut Vec<(Vec<u8>, u32)>,
) -> Result<Reply, NetlinkError> {
    for msg in dump_messages(buf) {
        let attributes = match msg? {
            DumpMsg::End(0) => return Ok(Reply::Done),
            DumpMsg::End(e) if e == libc::ENOENT => return Ok(Reply::NoSuchSet),
            DumpMsg::End(e) => return Err(dump_error(e)),
            DumpMsg::Entry { attributes, .. } => attributes,
        };
        for (t, list) in attrs(attributes) {
            if t != NFTA_SET_ELEM_LIST_ELEMENTS {
                continue;
            }
            for (t, elem) in attrs(list) {
                if t != NFTA_LIST_ELEM {
                    continue;
                }
                let mut key = None;
                let mut flags = 0;
                for (t, v) in attrs(elem) {
                    match t {
                        NFTA_SET_ELEM_KEY => {
                            key = attrs(v)
                                .find(|(t, _)| *t == NFTA_DATA_VALUE)
                                .map(|(_, v)| v.to_vec())
                        }
                        NFTA_SET_ELEM_FLAGS if v.len() == 4 => {
                            flags = u32::from_be_bytes(v.try_into().unwrap())
                        }
                        _ => {}
                    }
                }
                if let Some(k) = key {
                    out.push((k, flags));
                }
            }
        }
    }
    Ok(Reply::More)
}

/// Read one datagram of a set-element dump: the keys of its elements are appended to `keys`
/// (see [`set_elements_reply`]).
pub fn set_keys_reply(buf: &[u8], keys: &mut Vec<Vec<u8>>) -> Result<Reply, NetlinkError> {
    let mut elements = Vec::new();
    let reply = set_elements_reply(buf, &mut elements)?;
    keys.extend(elements.into_iter().map(|(key, _)| key));
    Ok(reply)
}

/// The attributes in `b`: (type without the nested and byte-order flags, payload). Stops at
/// the first malformed one.
fn attrs(mut b: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        if b.len() < 4 {
            return None;
        }
        let len = u16::from_ne_bytes([b[0], b[1]]) as usize;
        let ty = u16::from_ne_bytes([b[2], b[3]]) & 0x3fff;
        if len < 4 || len > b.len() {
            return None;
        }
        let payload = &b[4..len];
        b = &b[((len + 3) & !3).min(b.len())..];
        Some((ty, payload))
    })
}

/// Ask for one acknowledgement per batch instead of one per message: the flag is cleared on
/// every message of `batch` (begun and ended, messages whole) but the last before the end.
/// Returns that message's sequence number.
///
/// The kernel handles a batch whole within the `sendto` and then queues its replies in
/// message order: every refused message's error (an error is sent whatever the flag), then the
/// last message's acknowledgement; a commit that fails is reported first, against the batch
/// header. So the acknowledgement of the last message ends the exchange, and whatever went
/// wrong came before it. One acknowledgement per message cost a reply buffer and a `recv` each
/// (170 for a ruleset with a 1,000-address blacklist).
fn ack_last_only(batch: &mut [u8]) -> Option<u32> {
    let mut starts = Vec::new();
    let mut off = 0;
    while off + 16 <= batch.len() {
        let len = u32::from_ne_bytes(batch[off..off + 4].try_into().unwrap()) as usize;
        if len < 16 {
            break;
        }
        starts.push(off);
        off += (len + 3) & !3;
    }
    // The batch's begin and end marks are not messages of the transaction.
    let inner = starts.get(1..starts.len().saturating_sub(1))?;
    let (&last, rest) = inner.split_last()?;
    for &at in rest {
        let flags = u16::from_ne_bytes(batch[at + 6..at + 8].try_into().unwrap()) & !NLM_F_ACK;
        batch[at + 6..at + 8].copy_from_slice(&flags.to_ne_bytes());
    }
    let flags = u16::from_ne_bytes(batch[last + 6..last + 8].try_into().unwrap()) | NLM_F_ACK;
    batch[last + 6..last + 8].copy_from_slice(&flags.to_ne_bytes());
    Some(u32::from_ne_bytes(
        batch[last + 8..last + 12].try_into().unwrap(),
    ))
}

/// Read replies until message `last` is acknowledged (see [`ack_last_only`]); the first
/// error wins, with the sequence number of the message the kernel refused.
fn wait_acks(sock: &Socket, last: u32) -> Result<(), (Option<u32>, io::Error)> {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = sock.recv(&mut buf).map_err(|e| (None, e))?;
        let mut off = 0;
        while off + 16 <= n {
            let len = u32::from_ne_bytes(buf[off..off + 4].try_into().unwrap()) as usize;
            let ty = u16::from_ne_bytes(buf[off + 4..off + 6].try_into().unwrap());
            let seq = u32::from_ne_bytes(buf[off + 8..off + 12].try_into().unwrap());
            if len < 16 || off + len > n {
                return Err((None, io::Error::other("malformed netlink reply")));
            }
            if ty == NLMSG_ERROR && len >= 20 {
                let err = i32::from_ne_bytes(buf[off + 16..off + 20].try_into().unwrap());
                if err != 0 {
                    return Err((Some(seq), io::Error::from_raw_os_error(-err)));
                }
                if seq == last {
                    return Ok(());
                }
            }
            off += (len + 3) & !3;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pbxfw_core::Prefix;
    use std::str::FromStr;

    /// One acknowledgement per batch: the flag stays on the last message before the end mark
    /// only, whatever each message asked; a batch with no message asks for none.
    #[test]
    fn only_the_last_message_of_a_batch_is_acknowledged() {
        let msg = |seq: u32, flags: u16| {
            let mut m = Msg::new(NFT_MSG_DELSETELEM, flags, seq, NFPROTO_INET, 0);
            m.attr(NFTA_SET_ELEM_LIST_SET, &cstr("s"));
            m.finish()
        };
        let mut batch = batch_mark(NFNL_MSG_BATCH_BEGIN, 1);
        batch.extend(msg(2, NLM_F_REQUEST | NLM_F_ACK));
        batch.extend(msg(3, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE));
        batch.extend(msg(4, NLM_F_REQUEST));
        batch.extend(batch_mark(NFNL_MSG_BATCH_END, 5));
        assert_eq!(ack_last_only(&mut batch), Some(4));
        let mut flags = Vec::new();
        let mut off = 0;
        while off < batch.len() {
            let len = u32::from_ne_bytes(batch[off..off + 4].try_into().unwrap()) as usize;
            flags.push(u16::from_ne_bytes(
                batch[off + 6..off + 8].try_into().unwrap(),
            ));
            off += (len + 3) & !3;
        }
        assert_eq!(
            flags,
            [
                NLM_F_REQUEST,
                NLM_F_REQUEST,
                NLM_F_REQUEST | NLM_F_CREATE,
                NLM_F_REQUEST | NLM_F_ACK,
                NLM_F_REQUEST
            ]
        );
        let mut empty = batch_mark(NFNL_MSG_BATCH_BEGIN, 1);
        empty.extend(batch_mark(NFNL_MSG_BATCH_END, 2));
        assert_eq!(ack_last_only(&mut empty), None);
    }

    /// Interval sets are dumped as start keys and flagged end keys (the address after the
    /// range), in any order; a hash set's keys are addresses.
    #[test]
    fn dumped_elements_become_prefixes() {
        let v4 = |a: [u8; 4], end: bool| (a.to_vec(), u32::from(end));
        let got = element_prefixes(
            Family::Ipv4,
            vec![
                v4([10, 0, 1, 0], true),
                v4([10, 0, 0, 0], false),
                v4([192, 0, 2, 7], false),
                v4([192, 0, 2, 8], true),
                v4([203, 0, 113, 0], false),
            ],
        );
        let text: Vec<String> = got.iter().map(|p| p.to_string()).collect();
        assert_eq!(
            text[..4],
            [
                "10.0.0.0/24",
                "192.0.2.7",
                "203.0.113.0/24",
                "203.0.114.0/23"
            ]
        );
        // The range without an end runs to the end of the space.
        assert_eq!(text.last().unwrap(), "224.0.0.0/3");
        let hosts = element_prefixes(Family::Ipv4, vec![v4([198, 51, 100, 9], false)]);
        assert_eq!(hosts, vec![Prefix::from_str("198.51.100.9").unwrap()]);
        // A key of the wrong length is skipped.
        assert!(element_prefixes(Family::Ipv6, vec![v4([1, 2, 3, 4], false)]).is_empty());
    }

    /// A dump's datagram as the kernel writes it: the element's key is found, truncated and
    /// lying lengths are errors, the end and "no such set" are told apart.
    #[test]
    fn set_key_dumps_are_read_as_untrusted_bytes() {
        let mut m = Msg::new((NFNL_SUBSYS_NFTABLES << 8) | 12, 0x2, 1, NFPROTO_INET, 0);
        m.attr(NFTA_SET_ELEM_LIST_TABLE, &cstr("pbxfw"));
        m.attr(NFTA_SET_ELEM_LIST_SET, &cstr("fingerprint"));
        m.begin(NFTA_SET_ELEM_LIST_ELEMENTS);
        m.begin(NFTA_LIST_ELEM);
        m.begin(NFTA_SET_ELEM_KEY);
        m.attr(NFTA_DATA_VALUE, &[0xab; 16]);
        m.end();
        m.end();
        m.end();
        let mut dgram = m.finish();
        let mut keys = Vec::new();
        assert_eq!(set_keys_reply(&dgram, &mut keys).unwrap(), Reply::More);
        assert_eq!(keys, vec![vec![0xab; 16]]);
        let done = Msg::new(0x3, 0x2, 1, 0, 0).finish();
        assert_eq!(set_keys_reply(&done, &mut keys).unwrap(), Reply::Done);
        // The end of a dump that failed carries its error: the dump is not complete.
        let mut failed = done.clone();
        failed[16..20].copy_from_slice(&(-libc::EBUSY).to_ne_bytes());
        let e = set_keys_reply(&failed, &mut keys).unwrap_err();
        assert!(
            matches!(&e, NetlinkError::Socket(io) if io.raw_os_error() == Some(libc::EBUSY)),
            "{e}"
        );
        failed[16..20].copy_from_slice(&(-libc::ENOENT).to_ne_bytes());
        assert_eq!(
            set_keys_reply(&failed, &mut keys).unwrap(),
            Reply::NoSuchSet
        );
        // A code that is no negative error number.
        for code in [i32::MIN, 7] {
            failed[16..20].copy_from_slice(&code.to_ne_bytes());
            let e = set_keys_reply(&failed, &mut keys).unwrap_err();
            assert!(
                matches!(&e, NetlinkError::Socket(io) if io.raw_os_error() == Some(libc::EINVAL)),
                "{code}: {e}"
            );
        }
        // A part the kernel marks interrupted (a transaction committed during the dump): an
        // element may be missing, so the dump is an error to read again.
        let mut interrupted = dgram.clone();
        interrupted[6..8].copy_from_slice(&(0x2u16 | 0x10).to_ne_bytes());
        let e = set_keys_reply(&interrupted, &mut keys).unwrap_err();
        assert!(
            matches!(&e, NetlinkError::Socket(io) if io.raw_os_error() == Some(libc::EINTR)),
            "{e}"
        );
        // An error: the header, the (negative) errno, the request's header.
        let mut enoent = Vec::new();
        enoent.extend_from_slice(&36u32.to_ne_bytes());
        enoent.extend_from_slice(&NLMSG_ERROR.to_ne_bytes());
        enoent.extend_from_slice(&[0; 10]);
        enoent.extend_from_slice(&(-libc::ENOENT).to_ne_bytes());
        enoent.extend_from_slice(&[0; 16]);
        assert_eq!(
            set_keys_reply(&enoent, &mut keys).unwrap(),
            Reply::NoSuchSet
        );
        // A message longer than the datagram, and one shorter than its header.
        let longer = dgram.len() as u32 + 4;
        dgram[0..4].copy_from_slice(&longer.to_ne_bytes());
        assert!(set_keys_reply(&dgram, &mut keys).is_err());
        dgram[0..4].copy_from_slice(&8u32.to_ne_bytes());
        assert!(set_keys_reply(&dgram, &mut keys).is_err());
    }

    #[test]
    fn messages_are_aligned_and_sized() {
        let mut m = Msg::new(1, 2, 3, NFPROTO_INET, 0);
        m.attr(NFTA_SET_ELEM_LIST_TABLE, &cstr("pbxfw"));
        m.begin(NFTA_SET_ELEM_LIST_ELEMENTS);
        let e = Element {
            prefix: Prefix::from_str("10.0.0.0/8").unwrap(),
            timeout: None,
        };
        encode_element(&mut m, &e, SetShape::Interval).unwrap();
        m.end();
        let b = m.finish();
        assert_eq!(b.len() % 4, 0);
        assert_eq!(
            u32::from_ne_bytes(b[0..4].try_into().unwrap()) as usize,
            b.len()
        );
        // The end key of 10.0.0.0/8 is 11.0.0.0.
        assert!(b.windows(4).any(|w| w == [11, 0, 0, 0]));
        let last = Element {
            prefix: Prefix::from_str("255.255.255.255").unwrap(),
            timeout: None,
        };
        // An interval that ends the address space is a start alone (as `nft` writes it).
        let mut m = Msg::new(0, 0, 0, 0, 0);
        encode_element(&mut m, &last, SetShape::Interval).unwrap();
        let b = m.finish();
        let end_flag = NFT_SET_ELEM_INTERVAL_END.to_be_bytes();
        assert!(!b.windows(4).any(|w| w == end_flag), "{b:?}");
        assert!(b.windows(4).any(|w| w == [255, 255, 255, 255]));
    }
}
