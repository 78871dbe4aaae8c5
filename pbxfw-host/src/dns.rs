//! The DNS transport for hostnames in a policy: nameservers from `/etc/resolv.conf`, queries
//! over UDP with a fallback to TCP when the reply is truncated.
//!
//! Only DNS is asked. `/etc/hosts`, nsswitch and the search list are not consulted, on purpose:
//! FreePBX's firewall silently trusts `/etc/hosts`, so a stale or planted line there opens the
//! firewall to whoever holds that address. Here a hostname means what its zone says; policy
//! names are absolute, so there is no search list and no `ndots`.
//!
//! Replies are checked before they are believed: the query id is random, the reply must come from
//! the address and port the query went to, carry the same id and echo the question; anything
//! else is ignored until the timeout (as an off-path spoof would be). The meaning of a reply
//! (CNAMEs, TTLs, NXDOMAIN) and the refresh schedule are the core's (`pbxfw_core::DnsTracker`,
//! `pbxfw_core::parse_response`).
//!
//! A lookup blocks for up to timeout × attempts × servers: run [`refresh`] off the apply path.

use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use pbxfw_core::{
    answer_for, encode_query, parse_response, validate_name, DnsAnswer as Answer,
    DnsLookupError as LookupError, DnsRecordType as RecordType, DnsResponse as Response,
    DnsTracker as Tracker,
};

/// Where the nameservers are read from, unless `$PBXFW_RESOLV_CONF` names another file.
pub const RESOLV_CONF: &str = "/etc/resolv.conf";
/// glibc's defaults and limits (resolv.conf(5)): 5 s per try, 2 rounds, 3 servers, at most
/// 30 s and 5 rounds.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
const DEFAULT_ATTEMPTS: u32 = 2;
const MAX_SERVERS: usize = 3;
const MAX_TIMEOUT_SECS: u64 = 30;
const MAX_ATTEMPTS: u32 = 5;
const DNS_PORT: u16 = 53;
/// Room for any datagram: a reply larger than the buffer would be cut and misread.
const UDP_BUFFER: usize = 65_536;

/// A stub resolver: asks the configured recursive servers, in order, round after round.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolver {
    servers: Vec<SocketAddr>,
    timeout: Duration,
    attempts: u32,
}

impl Resolver {
    /// A resolver asking `servers` in order, waiting `timeout` for each, two rounds (glibc's
    /// default; see [`Resolver::with_attempts`]).
    pub fn new(servers: Vec<SocketAddr>, timeout: Duration) -> Resolver {
        Resolver {
            servers,
            timeout,
            attempts: DEFAULT_ATTEMPTS,
        }
    }

    /// The same resolver with `attempts` rounds over the servers (at least 1).
    pub fn with_attempts(self, attempts: u32) -> Resolver {
        Resolver {
            attempts: attempts.max(1),
            ..self
        }
    }

    /// The servers, in the order they are asked.
    pub fn servers(&self) -> &[SocketAddr] {
        &self.servers
    }

    /// How long each try waits for a reply.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// How many rounds over the servers a lookup makes.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// The system's nameservers: [`RESOLV_CONF`], or the file `$PBXFW_RESOLV_CONF` names (for
    /// tests). A missing or unreadable file means the defaults, as for glibc: 127.0.0.1.
    pub fn from_system() -> Resolver {
        let path = std::env::var_os("PBXFW_RESOLV_CONF")
            .filter(|v| !v.is_empty())
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| RESOLV_CONF.into());
        Resolver::from_resolv_conf(&std::fs::read_to_string(path).unwrap_or_default())
    }

    /// Parse resolv.conf(5) text: `nameserver` lines (IPv4 or IPv6; a `%scope` is ignored; port
    /// 53; the first three, like glibc) and `options timeout:N attempts:N` (capped at 30 and 5
    /// like glibc). Other lines, comments (`#`, `;`) and unreadable values are skipped. No
    /// nameserver means 127.0.0.1:53, like glibc.
    ///
    /// ```
    /// use pbxfw_host::dns::Resolver;
    /// let r = Resolver::from_resolv_conf("nameserver 192.0.2.53\noptions timeout:2 attempts:3\n");
    /// assert_eq!(r.servers(), ["192.0.2.53:53".parse()?]);
    /// assert_eq!(r.timeout().as_secs(), 2);
    /// assert_eq!(r.attempts(), 3);
    /// # Ok::<(), std::net::AddrParseError>(())
    /// ```
    pub fn from_resolv_conf(text: &str) -> Resolver {
        let mut servers = Vec::new();
        let mut timeout = DEFAULT_TIMEOUT;
        let mut attempts = DEFAULT_ATTEMPTS;
        for line in text.lines() {
            let line = line.split(['#', ';']).next().unwrap_or_default();
            let mut words = line.split_whitespace();
            match words.next() {
                Some("nameserver") => {
                    let addr = words.next().and_then(|w| {
                        let without_scope = w.split('%').next().unwrap_or(w);
                        without_scope.parse::<IpAddr>().ok()
                    });
                    if let Some(addr) = addr {
                        if servers.len() < MAX_SERVERS {
                            servers.push(SocketAddr::new(addr, DNS_PORT));
                        }
                    }
                }
                Some("options") => {
                    for option in words {
                        if let Some(n) = option.strip_prefix("timeout:") {
                            if let Ok(n) = n.parse::<u64>() {
                                timeout = Duration::from_secs(n.clamp(1, MAX_TIMEOUT_SECS));
                            }
                        } else if let Some(n) = option.strip_prefix("attempts:") {
                            if let Ok(n) = n.parse::<u32>() {
                                attempts = n.clamp(1, MAX_ATTEMPTS);
                            }
                        }
                    }
                }
                _ => {}
            }
        }
        if servers.is_empty() {
            servers.push(SocketAddr::new(Ipv4Addr::LOCALHOST.into(), DNS_PORT));
        }
        Resolver {
            servers,
            timeout,
            attempts,
        }
    }

    /// Look up `name` (A, AAAA or SRV). Each server in turn, for each round: UDP, then TCP if
    /// the reply is truncated; a timeout, an unusable reply or an error code other than
    /// NXDOMAIN moves on to the next server. The first usable reply is the answer; otherwise
    /// the last error is returned.
    pub fn lookup(&self, name: &str, rtype: RecordType) -> Result<Answer, LookupError> {
        validate_name(name).map_err(|e| LookupError::Malformed(e.to_string()))?;
        if self.servers.is_empty() {
            return Err(LookupError::NoServers);
        }
        let mut last = LookupError::Timeout;
        for _ in 0..self.attempts.max(1) {
            for &server in &self.servers {
                match self.exchange(server, name, rtype) {
                    Ok(answer) => return Ok(answer),
                    Err(e) => last = e,
                }
            }
        }
        Err(last)
    }

    fn exchange(
        &self,
        server: SocketAddr,
        name: &str,
        rtype: RecordType,
    ) -> Result<Answer, LookupError> {
        // A fresh id (and, through a fresh socket, a fresh source port) for every try.
        let id = query_id();
        let query =
            encode_query(id, name, rtype).map_err(|e| LookupError::Malformed(e.to_string()))?;
        let expect = Expect { id, name, rtype };
        let mut resp = udp_exchange(server, &query, &expect, self.timeout)?;
        if resp.truncated {
            resp = tcp_exchange(server, &query, &expect, self.timeout)?;
        }
        answer_for(&resp, name, rtype)
    }
}

/// Run every lookup `tracker` has due at `now` through `resolver` and record the results (at
/// `now`); returns the policy names whose addresses changed, for set-element updates. Blocks
/// while the lookups run: call it from a thread of its own, never from the apply path.
pub fn refresh(resolver: &Resolver, tracker: &mut Tracker, now: u64) -> Vec<String> {
    let mut changed = Vec::new();
    for lookup in tracker.due(now) {
        let result = resolver.lookup(&lookup.name, lookup.rtype);
        changed.extend(tracker.on_result(&lookup, result, now));
    }
    changed.sort();
    changed.dedup();
    changed
}

/// Run every lookup `tracker` has due at `now` at once, each on a thread of its own, and
/// record those answered within `budget` (also the SRV targets they make due, in further
/// rounds while the budget lasts). Lookups still running when it ends are left due (their
/// threads end by themselves, each after at most `budget` per server and attempt). For an
/// apply, which must not wait on the DNS for long: returns the names whose addresses changed.
pub fn refresh_within(
    resolver: &Resolver,
    tracker: &mut Tracker,
    now: u64,
    budget: Duration,
) -> Vec<String> {
    /// Threads started at most per round (a policy with more names leaves the rest due).
    const MAX_PARALLEL: usize = 64;
    let deadline = Instant::now() + budget;
    let mut changed = Vec::new();
    let mut asked = std::collections::BTreeSet::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        let due: Vec<_> = tracker
            .due(now)
            .into_iter()
            .filter(|l| !asked.contains(l))
            .take(MAX_PARALLEL)
            .collect();
        if due.is_empty() {
            break;
        }
        // No reply waited for longer than the budget left, so the threads end soon after.
        let r = Resolver::new(resolver.servers.clone(), resolver.timeout.min(left))
            .with_attempts(resolver.attempts);
        let (tx, rx) = std::sync::mpsc::channel();
        for lookup in &due {
            asked.insert(lookup.clone());
            let (r, tx, lookup) = (r.clone(), tx.clone(), lookup.clone());
            std::thread::spawn(move || {
                let result = r.lookup(&lookup.name, lookup.rtype);
                let _ = tx.send((lookup, result));
            });
        }
        drop(tx);
        for _ in 0..due.len() {
            let wait = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(wait) {
                Ok((lookup, result)) => changed.extend(tracker.on_result(&lookup, result, now)),
                Err(_) => break,
            }
        }
    }
    changed.sort();
    changed.dedup();
    changed
}

/// What a reply must match to be believed.
struct Expect<'a> {
    id: u16,
    name: &'a str,
    rtype: RecordType,
}

impl Expect<'_> {
    /// Whether `resp` answers this query. An error reply (other than NXDOMAIN) may omit the
    /// question; it only moves the lookup on to the next server, so that is allowed.
    fn matches(&self, resp: &Response) -> bool {
        let name = self.name.strip_suffix('.').unwrap_or(self.name);
        let question_ok = match resp.questions.as_slice() {
            [q] => {
                q.qtype == self.rtype.code()
                    && q.name
                        .strip_suffix('.')
                        .unwrap_or(&q.name)
                        .eq_ignore_ascii_case(name)
            }
            [] => !matches!(resp.rcode, 0 | 3),
            _ => false,
        };
        resp.id == self.id && question_ok
    }
}

fn udp_exchange(
    server: SocketAddr,
    query: &[u8],
    expect: &Expect<'_>,
    timeout: Duration,
) -> Result<Response, LookupError> {
    let local: SocketAddr = match server {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let io = |stage: &str, e: std::io::Error| LookupError::Io(format!("{stage} {server}: {e}"));
    let sock = UdpSocket::bind(local).map_err(|e| io("UDP bind for", e))?;
    sock.send_to(query, server)
        .map_err(|e| io("UDP send to", e))?;
    let deadline = Instant::now() + timeout;
    let mut buf = vec![0; UDP_BUFFER];
    // A garbled reply from the server's address might be a spoof: wait on for a good one, but
    // report it rather than a plain timeout if none comes.
    let mut garbled = None;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(garbled.unwrap_or(LookupError::Timeout));
        }
        sock.set_read_timeout(Some(left))
            .map_err(|e| io("UDP receive from", e))?;
        let (len, from) = match sock.recv_from(&mut buf) {
            Ok(got) => got,
            Err(e) if is_timeout(&e) || e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(io("UDP receive from", e)),
        };
        // The socket is not connected, so anyone can send to it: the kernel does not filter.
        // Compare address and port only (a link-local server's reply carries a scope id).
        if from.ip() != server.ip() || from.port() != server.port() {
            continue;
        }
        match parse_response(buf.get(..len).unwrap_or_default()) {
            Ok(resp) if expect.matches(&resp) => return Ok(resp),
            Ok(_) => continue,
            Err(e) => garbled = Some(LookupError::Malformed(e.to_string())),
        }
    }
}

fn tcp_exchange(
    server: SocketAddr,
    query: &[u8],
    expect: &Expect<'_>,
    timeout: Duration,
) -> Result<Response, LookupError> {
    let io = |stage: &str, e: std::io::Error| {
        if is_timeout(&e) {
            LookupError::Timeout
        } else {
            LookupError::Io(format!("{stage} {server}: {e}"))
        }
    };
    let deadline = Instant::now() + timeout;
    let mut stream =
        TcpStream::connect_timeout(&server, timeout).map_err(|e| io("TCP connect to", e))?;
    // RFC 1035 §4.2.2: each message is preceded by its length in two bytes.
    let len = u16::try_from(query.len())
        .map_err(|_| LookupError::Malformed("query longer than 65535 bytes".into()))?;
    let mut framed = len.to_be_bytes().to_vec();
    framed.extend_from_slice(query);
    stream
        .set_write_timeout(Some(timeout))
        .and_then(|()| stream.write_all(&framed))
        .map_err(|e| io("TCP send to", e))?;
    let mut prefix = [0; 2];
    read_full(&mut stream, &mut prefix, deadline).map_err(|e| io("TCP receive from", e))?;
    let mut reply = vec![0; usize::from(u16::from_be_bytes(prefix))];
    read_full(&mut stream, &mut reply, deadline).map_err(|e| io("TCP receive from", e))?;
    let resp = parse_response(&reply).map_err(|e| LookupError::Malformed(e.to_string()))?;
    // On a connection of our own a reply to another question is a broken server, not a spoof.
    if !expect.matches(&resp) {
        return Err(LookupError::Malformed(format!(
            "TCP reply from {server} does not answer the query"
        )));
    }
    Ok(resp)
}

/// Fill `buf` before `deadline` (a `read_exact` with one deadline for all its reads, so a
/// server dripping bytes cannot stretch the timeout).
fn read_full(stream: &mut TcpStream, buf: &mut [u8], deadline: Instant) -> std::io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(ErrorKind::TimedOut.into());
        }
        stream.set_read_timeout(Some(left))?;
        match stream.read(&mut buf[done..]) {
            Ok(0) => return Err(ErrorKind::UnexpectedEof.into()),
            Ok(n) => done += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// A socket read timeout shows as `WouldBlock` on Unix and `TimedOut` elsewhere.
fn is_timeout(e: &std::io::Error) -> bool {
    matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
}

/// A query id an off-path attacker cannot guess (RFC 5452 §9.2): from `/dev/urandom`, or, if
/// that cannot be read, from std's randomly keyed SipHash over the clock and the process id.
fn query_id() -> u16 {
    let mut bytes = [0; 2];
    if File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .is_ok()
    {
        return u16::from_be_bytes(bytes);
    }
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    h.write_u128(nanos);
    h.write_u32(std::process::id());
    h.finish() as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf() {
        let r = Resolver::from_resolv_conf(
            "# generated\n\
             search example.com\n\
             nameserver 192.0.2.1 # first\n\
             nameserver fe80::1%eth0\n\
             ; nameserver 192.0.2.99\n\
             nameserver not-an-address\n\
             nameserver 2001:db8::53\n\
             nameserver 192.0.2.4\n\
             options rotate timeout:0 attempts:9\n\
             options edns0\n",
        );
        let expected: Vec<SocketAddr> = ["192.0.2.1:53", "[fe80::1]:53", "[2001:db8::53]:53"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        assert_eq!(r.servers(), expected);
        assert_eq!(r.timeout(), Duration::from_secs(1));
        assert_eq!(r.attempts(), 5);
    }

    #[test]
    fn resolv_conf_defaults() {
        let r = Resolver::from_resolv_conf("");
        assert_eq!(r.servers(), ["127.0.0.1:53".parse().unwrap()]);
        assert_eq!(r.timeout(), DEFAULT_TIMEOUT);
        assert_eq!(r.attempts(), DEFAULT_ATTEMPTS);
        let r = Resolver::from_resolv_conf("options timeout:99 attempts:0\n");
        assert_eq!(r.timeout(), Duration::from_secs(30));
        assert_eq!(r.attempts(), 1);
    }

    #[test]
    fn bad_names_and_no_servers() {
        let r = Resolver::new(vec![], Duration::from_millis(10));
        assert_eq!(
            r.lookup("pbx.example", RecordType::A),
            Err(LookupError::NoServers)
        );
        assert!(matches!(
            r.lookup("not a name", RecordType::A),
            Err(LookupError::Malformed(_))
        ));
    }

    #[test]
    fn ids_vary() {
        let ids: std::collections::BTreeSet<u16> = (0..32).map(|_| query_id()).collect();
        assert!(ids.len() > 16);
    }
}
