//! WireGuard peers as VPN sessions (docs/vpn.md): while a peer whose public key a user lists
//! (`users.*.wireguard`) has a recent handshake, the public address it last came from (its
//! *endpoint*) is registered for that user, as OpenVPN's scripts register theirs.
//!
//! WireGuard has no connect or disconnect to hook: a peer is connected while its latest
//! handshake is younger than the idle bound. While traffic flows WireGuard makes a new
//! handshake when a session's keys reach 2 minutes (REKEY_AFTER_TIME, 120 s; a side that only
//! receives rekeys by 165 s, and keys are refused at 180 s, REJECT_AFTER_TIME), retrying every
//! 5 s when one is lost; it stops when traffic does. The default bound, 240 s, leaves a minute
//! over the latest a busy peer's next handshake comes: a peer that goes quiet loses its grant
//! at most `idle + poll` after its last handshake, and a crashed daemon's kernel elements
//! expire by then too.
//!
//! The peers are read with `wg show all dump`, which answers for the kernel's WireGuard and
//! for userspace implementations alike. Its peer lines are trusted only as far as WireGuard
//! itself vouches for them: an endpoint is the address an authenticated packet of that peer
//! last came from.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pbxfw_core::SecurityEvent;

/// The default idle bound, seconds: the 180 s after which WireGuard refuses a session's keys,
/// and a minute's slack.
pub const DEFAULT_IDLE: u64 = 240;

/// A handshake more than this far in the future (a clock stepped back) is not believed.
const FUTURE_SLACK: u64 = 60;

/// Below this a `latest-handshake` is an age, not a time: the kernel prints a UNIX time, and
/// BoringTun (a userspace WireGuard) the seconds since the handshake. No real handshake
/// happened before 2001.
const AGE_BELOW: u64 = 1_000_000_000;

/// One peer line of `wg show all dump`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// The interface.
    pub interface: String,
    /// The peer's public key, base64.
    pub public_key: String,
    /// The address its last authenticated packet came from; none before the first.
    pub endpoint: Option<IpAddr>,
    /// The latest handshake as printed: 0 for never, else a UNIX time or an age in seconds.
    pub latest_handshake: u64,
}

impl Peer {
    /// Seconds since the latest handshake, if there was one and it is believable (not in the
    /// future). BoringTun prints an age under a second as 0, like "never": [`Tracker`] keeps a
    /// session through such a reading.
    pub fn age(&self, now: u64) -> Option<u64> {
        match self.latest_handshake {
            0 => None,
            a if a < AGE_BELOW => Some(a),
            t if t > now + FUTURE_SLACK => None,
            t => Some(now.saturating_sub(t)),
        }
    }
}

/// The peers of `wg show all dump`, and a description of each line that was not understood.
/// Interface lines (5 fields) are skipped, so a private key is never kept; a peer line that is
/// not understood is skipped alone, so one odd peer cannot stop every other one's renewals.
pub fn parse_dump(text: &str) -> (Vec<Peer>, Vec<String>) {
    let mut peers = Vec::new();
    let mut bad = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let f: Vec<&str> = line.split('\t').collect();
        match f.len() {
            _ if line.trim().is_empty() => {}
            5 => {}
            9 => match peer(&f) {
                Ok(p) => peers.push(p),
                Err(e) => bad.push(format!("line {}: {e}", n + 1)),
            },
            k => bad.push(format!("line {}: {k} fields", n + 1)),
        }
    }
    (peers, bad)
}

fn peer(f: &[&str]) -> Result<Peer, String> {
    let endpoint = match f[3] {
        "(none)" => None,
        e => Some(endpoint(e).ok_or_else(|| format!("endpoint {e:?}"))?),
    };
    let latest_handshake = f[5]
        .parse::<u64>()
        .map_err(|_| format!("latest handshake {:?}", f[5]))?;
    Ok(Peer {
        interface: f[0].to_string(),
        public_key: f[1].to_string(),
        endpoint: endpoint.map(canonical),
        latest_handshake,
    })
}

/// `192.0.2.1:51820`, `[2001:db8::1]:51820`, or a link-local `[fe80::1%wg0]:51820` (its scope
/// dropped: the rules match the address).
fn endpoint(e: &str) -> Option<IpAddr> {
    if let Ok(a) = e.parse::<SocketAddr>() {
        return Some(a.ip());
    }
    let (host, _port) = e.rsplit_once(':')?;
    let inner = host.strip_prefix('[')?.strip_suffix(']')?;
    let (addr, _scope) = inner.split_once('%')?;
    addr.parse::<std::net::Ipv6Addr>().ok().map(IpAddr::V6)
}

/// An IPv4 peer reached over an IPv6 socket is printed as `[::ffff:a.b.c.d]`: it is the IPv4
/// address the kernel's IPv4 rules see.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// A peer connected as a user.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Session {
    user: String,
    endpoint: IpAddr,
    /// The UNIX time of the handshake last registered.
    handshake: u64,
}

/// Which peers are connected, and the events that say so to the state machine: a
/// registration of the endpoint for the user at connect and at each new handshake (lasting
/// until the bound), an unregistration when the peer goes quiet, roams (the old endpoint), is
/// removed, or its key leaves the policy.
#[derive(Debug)]
pub struct Tracker {
    idle: u64,
    poll: u64,
    sessions: BTreeMap<String, Session>,
}

impl Tracker {
    /// A tracker for peers quiet for more than `idle` seconds, read every `poll` seconds.
    pub fn new(idle: u64, poll: u64) -> Tracker {
        Tracker {
            idle,
            poll,
            sessions: BTreeMap::new(),
        }
    }

    /// The events for what `peers` say at `now`; `users` maps public keys to user names.
    pub fn observe(
        &mut self,
        peers: &[Peer],
        users: &HashMap<String, String>,
        now: u64,
    ) -> Vec<SecurityEvent> {
        let mut out = Vec::new();
        let mut seen = std::collections::BTreeSet::new();
        // A key on several interfaces: its most recent handshake speaks for it.
        let mut best: BTreeMap<&str, (&Peer, Option<u64>)> = BTreeMap::new();
        for p in peers.iter().filter(|p| users.contains_key(&p.public_key)) {
            let age = p.age(now);
            let better = match best.get(p.public_key.as_str()) {
                None => true,
                Some((_, Some(b))) => age.is_some_and(|a| a < *b),
                Some((_, None)) => age.is_some(),
            };
            if better {
                best.insert(&p.public_key, (p, age));
            }
        }
        for (key, (p, age)) in best {
            let user = &users[key];
            let Some(endpoint) = p.endpoint else {
                continue;
            };
            // BoringTun prints a handshake under a second old as 0: a session it is the latest
            // handshake of goes on unchanged.
            if p.latest_handshake == 0 {
                if let Some(s) = self.sessions.get(key) {
                    if s.endpoint == endpoint && &s.user == user {
                        seen.insert(key.to_string());
                    }
                }
                continue;
            }
            let Some(age) = age else {
                continue;
            };
            if age > self.idle || !seen.insert(key.to_string()) {
                continue;
            }
            let handshake = now.saturating_sub(age);
            let old = self.sessions.get(&p.public_key);
            let renew = match old {
                None => true,
                Some(s) if s.endpoint != endpoint || &s.user != user => {
                    out.push(SecurityEvent::Unregistered {
                        source: s.endpoint,
                        account: s.user.clone(),
                    });
                    true
                }
                // An age is read to the second: a later reading of the same handshake can
                // differ by one. WireGuard makes handshakes at least 5 s apart.
                Some(s) => handshake >= s.handshake + 3,
            };
            if renew {
                // Until the bound after this handshake, and one poll more: the unregistration
                // at the poll after the bound is what ends it on time.
                let expires = (self.idle - age + self.poll).clamp(1, u32::MAX as u64) as u32;
                out.push(SecurityEvent::Registered {
                    source: endpoint,
                    account: user.clone(),
                    expires,
                });
                self.sessions.insert(
                    p.public_key.clone(),
                    Session {
                        user: user.clone(),
                        endpoint,
                        handshake,
                    },
                );
            }
        }
        let gone: Vec<String> = self
            .sessions
            .keys()
            .filter(|k| !seen.contains(*k))
            .cloned()
            .collect();
        for k in gone {
            let s = self.sessions.remove(&k).expect("listed above");
            out.push(SecurityEvent::Unregistered {
                source: s.endpoint,
                account: s.user,
            });
        }
        self.keep_shared(out, now)
    }

    /// Two peers of one user behind one address share one registration (the state machine
    /// keys them by address and account, and keeps the expiry of whichever registered last):
    /// a registration always carries the latest bound of the peers sharing it, and when one of
    /// them ends, the registration stays, renewed, while another is connected.
    fn keep_shared(&self, events: Vec<SecurityEvent>, now: u64) -> Vec<SecurityEvent> {
        let shared = |source: &IpAddr, account: &str| {
            self.sessions
                .values()
                .filter(|s| s.endpoint == *source && s.user == account)
                .map(|s| {
                    let age = now.saturating_sub(s.handshake).min(self.idle);
                    (self.idle - age + self.poll).clamp(1, u32::MAX as u64) as u32
                })
                .max()
        };
        events
            .into_iter()
            .map(|e| match e {
                SecurityEvent::Registered {
                    source,
                    account,
                    expires,
                } => {
                    let expires = shared(&source, &account).map_or(expires, |b| b.max(expires));
                    SecurityEvent::Registered {
                        source,
                        account,
                        expires,
                    }
                }
                SecurityEvent::Unregistered { source, account } => {
                    match shared(&source, &account) {
                        None => SecurityEvent::Unregistered { source, account },
                        Some(expires) => SecurityEvent::Registered {
                            source,
                            account,
                            expires,
                        },
                    }
                }
                other => other,
            })
            .collect()
    }

    /// How many peers are connected.
    pub fn connected(&self) -> usize {
        self.sessions.len()
    }
}

/// The public keys a policy maps to users.
pub fn key_map(policy: &pbxfw_core::ValidPolicy) -> HashMap<String, String> {
    policy
        .users
        .iter()
        .flat_map(|u| u.wireguard.iter().map(|k| (k.clone(), u.name.clone())))
        .collect()
}

/// How the daemon watches WireGuard.
#[derive(Debug, Clone)]
pub struct WireGuardConfig {
    /// Seconds a peer may go without a handshake and stay connected.
    pub idle: u64,
    /// Seconds between two readings of the peers.
    pub poll: u64,
    /// The `wg` program.
    pub wg: String,
}

impl Default for WireGuardConfig {
    fn default() -> Self {
        WireGuardConfig {
            idle: DEFAULT_IDLE,
            poll: 5,
            wg: "wg".into(),
        }
    }
}

/// The watcher's side of the policy: the key map, replaced at each reload.
pub type Keys = Arc<Mutex<HashMap<String, String>>>;

/// Watch the peers until `deliver` says the daemon is gone. `note` tells of a `wg` that
/// cannot be run or read (once per kind of failure, not once per poll).
pub fn watch(
    config: &WireGuardConfig,
    keys: &Keys,
    deliver: &dyn Fn(SecurityEvent) -> bool,
    note: &dyn Fn(String) -> bool,
    now: &dyn Fn() -> u64,
) {
    let mut tracker = Tracker::new(config.idle, config.poll);
    let mut last_failure = String::new();
    let mut last_odd = String::new();
    loop {
        let users = keys.lock().expect("the key map is never poisoned").clone();
        let peers = match read_peers(&config.wg) {
            Ok((peers, odd)) => {
                if !last_failure.is_empty() {
                    last_failure.clear();
                    if !note("wireguard: the peers are read again".into()) {
                        return;
                    }
                }
                // Lines not understood are skipped, and told once until they change.
                let odd = odd.join("; ");
                if odd != last_odd {
                    if !odd.is_empty() && !note(format!("wireguard: skipped {odd}")) {
                        return;
                    }
                    last_odd = odd;
                }
                peers
            }
            Err(e) => {
                if e != last_failure {
                    if !note(format!("wireguard: {e}")) {
                        return;
                    }
                    last_failure = e;
                }
                // Nothing known: sessions are left to their kernel timeouts rather than
                // ended by a failure to look.
                std::thread::sleep(Duration::from_secs(config.poll));
                continue;
            }
        };
        for event in tracker.observe(&peers, &users, now()) {
            if !deliver(event) {
                return;
            }
        }
        std::thread::sleep(Duration::from_secs(config.poll));
    }
}

/// The largest dump read: 64 bytes a peer line, a million peers.
const MAX_DUMP: u64 = 64 << 20;

/// How long `wg` may take: a userspace WireGuard that hangs must not stop the watcher.
const WG_TIMEOUT: Duration = Duration::from_secs(10);

fn read_peers(wg: &str) -> Result<(Vec<Peer>, Vec<String>), String> {
    use std::io::Read;
    let mut child = std::process::Command::new(wg)
        .args(["show", "all", "dump"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("{wg} cannot be run: {e}"))?;
    let mut stdout = child.stdout.take().expect("piped");
    let mut stderr = child.stderr.take().expect("piped");
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let read = (&mut stdout).take(MAX_DUMP).read_to_string(&mut text);
        let mut err = String::new();
        let _ = (&mut stderr).take(4096).read_to_string(&mut err);
        (read.map(|_| text), err)
    });
    let started = std::time::Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if started.elapsed() < WG_TIMEOUT => {
                std::thread::sleep(Duration::from_millis(20))
            }
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "{wg} show all dump did not answer within {} s",
                    WG_TIMEOUT.as_secs()
                ));
            }
            Err(e) => return Err(format!("{wg}: {e}")),
        }
    };
    let (text, err) = reader.join().expect("the reader does not panic");
    let text = text.map_err(|e| format!("{wg} show all dump: {e}"))?;
    if !status.success() {
        return Err(format!("{wg} show all dump: {status}: {}", err.trim()));
    }
    Ok(parse_dump(&text))
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "akv1NcmJPdKlKGpCL1HPvUPzGMeKfhL5F1cMFgrDXnE=";
    const B: &str = "R69YujzCWhQtagx+NF3xA9nhd0oONChBFSPKjCixRTU=";

    fn users() -> HashMap<String, String> {
        HashMap::from([(A.to_string(), "alice".to_string())])
    }

    fn peer(key: &str, endpoint: Option<&str>, hs: u64) -> Peer {
        Peer {
            interface: "wg0".into(),
            public_key: key.into(),
            endpoint: endpoint.map(|e| e.parse::<SocketAddr>().unwrap().ip()),
            latest_handshake: hs,
        }
    }

    fn reg(ip: &str, expires: u32) -> SecurityEvent {
        SecurityEvent::Registered {
            source: ip.parse().unwrap(),
            account: "alice".into(),
            expires,
        }
    }

    fn unreg(ip: &str) -> SecurityEvent {
        SecurityEvent::Unregistered {
            source: ip.parse().unwrap(),
            account: "alice".into(),
        }
    }

    #[test]
    fn the_dump_is_read_by_its_peer_lines_only() {
        let dump = format!(
            "wg0\tPRIVATE\tPUBLIC\t51820\toff\n\
             wg0\t{A}\t(none)\t198.51.100.2:40985\t10.9.0.2/32\t1796563915\t31\t59\toff\n\
             wg0\t{B}\t(none)\t(none)\t10.9.0.3/32\t0\t0\t0\t25\n\
             wg1\t{B}\t(none)\t[::ffff:192.0.2.9]:5\t(none)\t4\t0\t0\toff\n"
        );
        let (p, bad) = parse_dump(&dump);
        assert!(bad.is_empty(), "{bad:?}");
        assert_eq!(p.len(), 3);
        assert_eq!(p[0].endpoint, Some("198.51.100.2".parse().unwrap()));
        assert_eq!(p[0].age(1_796_563_920), Some(5));
        assert_eq!(p[1].endpoint, None);
        assert_eq!(p[1].age(1_796_563_920), None);
        // BoringTun prints the age; an IPv4-mapped endpoint is the IPv4 address.
        assert_eq!(p[2].age(1_796_563_920), Some(4));
        assert_eq!(p[2].endpoint, Some("192.0.2.9".parse().unwrap()));
        // An odd line is skipped alone; a link-local endpoint loses its scope.
        let dump = format!(
            "wg0\t{A}\t(none)\tnot-an-endpoint\t(none)\t1\t0\t0\toff\n\
             wg0\t{A}\t(none)\t192.0.2.1:5\t(none)\t-1\t0\t0\toff\n\
             wg0\tthree\tfields\n\
             wg0\t{B}\t(none)\t[fe80::1%wg0]:51820\t(none)\t4\t0\t0\toff\n"
        );
        let (p, bad) = parse_dump(&dump);
        assert_eq!(bad.len(), 3, "{bad:?}");
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].endpoint, Some("fe80::1".parse().unwrap()));
        // A handshake in the future (a clock stepped back) is not believed.
        let future = peer(A, Some("192.0.2.1:5"), 1_796_563_920 + 3600);
        assert_eq!(future.age(1_796_563_920), None);
    }

    #[test]
    fn a_peer_is_connected_while_its_handshake_is_recent() {
        let mut t = Tracker::new(180, 5);
        let now = 1_000_000_000_u64 * 2;
        // Never handshaken, or a key no user lists: nothing.
        let e = t.observe(
            &[peer(A, None, 0), peer(B, Some("192.0.2.7:1"), now - 1)],
            &users(),
            now,
        );
        assert!(e.is_empty());
        // Connected 10 s ago: registered until the bound, and one poll more.
        let e = t.observe(&[peer(A, Some("198.51.100.2:9"), now - 10)], &users(), now);
        assert_eq!(e, [reg("198.51.100.2", 175)]);
        // The same handshake read again: nothing; a new one renews.
        let e = t.observe(
            &[peer(A, Some("198.51.100.2:9"), now - 10)],
            &users(),
            now + 5,
        );
        assert!(e.is_empty());
        let e = t.observe(
            &[peer(A, Some("198.51.100.2:9"), now + 120)],
            &users(),
            now + 121,
        );
        assert_eq!(e, [reg("198.51.100.2", 184)]);
        // Roaming: the old endpoint loses it, the new one gets it.
        let e = t.observe(
            &[peer(A, Some("203.0.113.5:9"), now + 130)],
            &users(),
            now + 131,
        );
        assert_eq!(e, [unreg("198.51.100.2"), reg("203.0.113.5", 184)]);
        assert_eq!(t.connected(), 1);
        // Quiet past the bound: gone.
        let e = t.observe(
            &[peer(A, Some("203.0.113.5:9"), now + 130)],
            &users(),
            now + 311,
        );
        assert_eq!(e, [unreg("203.0.113.5")]);
        assert_eq!(t.connected(), 0);
    }

    #[test]
    fn a_removed_peer_or_key_ends_the_session() {
        let mut t = Tracker::new(180, 5);
        let e = t.observe(&[peer(A, Some("198.51.100.2:9"), 3)], &users(), 100);
        assert_eq!(e, [reg("198.51.100.2", 182)]);
        // The key left the policy.
        let e = t.observe(&[peer(A, Some("198.51.100.2:9"), 3)], &HashMap::new(), 105);
        assert_eq!(e, [unreg("198.51.100.2")]);
        let e = t.observe(&[peer(A, Some("198.51.100.2:9"), 3)], &users(), 110);
        assert_eq!(e, [reg("198.51.100.2", 182)]);
        // The peer was removed from the interface.
        let e = t.observe(&[], &users(), 115);
        assert_eq!(e, [unreg("198.51.100.2")]);
    }

    #[test]
    fn a_zero_from_boringtun_keeps_a_session_and_the_freshest_interface_speaks() {
        let mut t = Tracker::new(180, 5);
        let e = t.observe(&[peer(A, Some("198.51.100.2:9"), 3)], &users(), 100);
        assert_eq!(e, [reg("198.51.100.2", 182)]);
        // A handshake under a second old reads as 0: nothing changes.
        assert!(t
            .observe(&[peer(A, Some("198.51.100.2:9"), 0)], &users(), 105)
            .is_empty());
        assert_eq!(t.connected(), 1);
        // The same key on two interfaces: the fresher line speaks, in either order.
        let mut other = peer(A, Some("203.0.113.5:9"), 1);
        other.interface = "wg1".into();
        for order in [
            vec![peer(A, Some("198.51.100.2:9"), 150), other.clone()],
            vec![other.clone(), peer(A, Some("198.51.100.2:9"), 150)],
        ] {
            let mut t = Tracker::new(180, 5);
            assert_eq!(t.observe(&order, &users(), 200), [reg("203.0.113.5", 184)]);
        }
    }

    #[test]
    fn two_peers_of_one_user_behind_one_address_share_the_registration() {
        let users = HashMap::from([
            (A.to_string(), "alice".to_string()),
            (B.to_string(), "alice".to_string()),
        ]);
        let mut t = Tracker::new(180, 5);
        let e = t.observe(
            &[
                peer(A, Some("198.51.100.2:9"), 3),
                peer(B, Some("198.51.100.2:7"), 10),
            ],
            &users,
            100,
        );
        // Both carry the later bound, whichever the machine takes last.
        assert_eq!(e, [reg("198.51.100.2", 182), reg("198.51.100.2", 182)]);
        // A goes quiet past the bound while B keeps handshaking: the registration stays,
        // renewed to B's own bound instead of being withdrawn.
        let e = t.observe(
            &[
                peer(A, Some("198.51.100.2:9"), 190),
                peer(B, Some("198.51.100.2:7"), 1),
            ],
            &users,
            300,
        );
        assert_eq!(e, [reg("198.51.100.2", 184), reg("198.51.100.2", 184)]);
        // B goes too: now it is withdrawn.
        let e = t.observe(&[], &users, 310);
        assert_eq!(e, [unreg("198.51.100.2")]);
    }
}
