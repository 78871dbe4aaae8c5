//! `pbxfw replay`: recorded logs, AMI streams or JSON lines run through a fresh responsive
//! machine with the records' own times, as a dry run of what the daemon would have done. Logs
//! are read through the same framer as the daemon reads them.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;
use std::sync::mpsc;

use pbxfw_core::log::Framer;
use pbxfw_core::ValidPolicy;
use pbxfw_core::{ami, json, EventError, TimedEvent};
use pbxfw_core::{Action, Machine, MachineConfig as Config};

/// What `pbxfw replay` found.
#[derive(Debug, Default, serde::Serialize)]
pub struct ReplayReport {
    /// Records read.
    pub records: usize,
    /// Records that were security events.
    pub events: usize,
    /// Every action, with the time it would have been taken.
    pub actions: Vec<(u64, Action)>,
    /// Sources that would have been banned: first ban time and reason.
    pub banned: BTreeMap<pbxfw_core::Prefix, (u64, String)>,
    /// Sources that would have been clamped.
    pub clamped: BTreeMap<pbxfw_core::Prefix, u64>,
    /// Accounts that registered, with their addresses.
    pub registered: BTreeMap<String, Vec<std::net::IpAddr>>,
    /// Identities reported instead of banning a protected source.
    pub reported: usize,
    /// Records refused because a sender may have written them (docs/events.md, "Trust").
    pub ambiguous: usize,
}

/// How much a replay's report holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detail {
    /// Bans, clamps, registrations and counts, but not every action: the text report shows no
    /// more, and its memory then grows with the sources, not with the events (a month of logs
    /// makes millions of actions; keeping them was also a twentieth of a replay's time).
    Summary,
    /// Every action too, with its time (the JSON report).
    Actions,
}

/// Run records through a fresh machine, with time taken from the records.
pub fn replay(
    policy: &ValidPolicy,
    events: impl Iterator<Item = TimedEvent>,
    records: usize,
    detail: Detail,
) -> ReplayReport {
    replay_leaving(policy, events, records, detail).0
}

/// [`replay`], with what the replay leaves behind handed to the caller.
fn replay_leaving(
    policy: &ValidPolicy,
    events: impl Iterator<Item = TimedEvent>,
    records: usize,
    detail: Detail,
) -> (ReplayReport, Leftovers) {
    let mut replayer = Replayer::new(policy, detail);
    replayer.report.records = records;
    for e in events {
        replayer.feed(&e);
    }
    let leftovers = Leftovers {
        _machine: replayer.machine,
        _buffers: None,
    };
    (replayer.report, leftovers)
}

/// A machine being replayed, and what it did so far.
struct Replayer {
    machine: Machine,
    report: ReplayReport,
    /// The time of the last record that carried one.
    t: u64,
    /// Which (account, address) pairs `report.registered` holds: looking through an account's
    /// list made a replay quadratic in the addresses an account registers from.
    seen: std::collections::HashMap<String, std::collections::HashSet<std::net::IpAddr>>,
    detail: Detail,
}

impl Replayer {
    fn new(policy: &ValidPolicy, detail: Detail) -> Replayer {
        Replayer {
            machine: Machine::new(Config::from_policy(policy)),
            report: ReplayReport::default(),
            t: 0,
            seen: std::collections::HashMap::new(),
            detail,
        }
    }

    fn feed(&mut self, e: &TimedEvent) {
        let r = &mut self.report;
        r.events += 1;
        self.t = e.at.unwrap_or(self.t);
        let t = self.t;
        for a in self.machine.on_event(&e.event, t) {
            match &a {
                // Keyed by address, not text: a string per action was a fifth of the replay.
                Action::Ban { prefix, reason, .. } => {
                    r.banned
                        .entry(*prefix)
                        .or_insert_with(|| (t, reason.clone()));
                }
                Action::Clamp { prefix, .. } => {
                    r.clamped.entry(*prefix).or_insert(t);
                }
                Action::AllowRegistered { addr, account, .. } => {
                    // Looked up by `&str`: the account is copied once, not per registration.
                    match self.seen.get_mut(account.as_str()) {
                        Some(addrs) => {
                            // `registered` has the account since `seen` has it.
                            if addrs.insert(*addr) {
                                if let Some(v) = r.registered.get_mut(account.as_str()) {
                                    v.push(*addr);
                                }
                            }
                        }
                        None => {
                            self.seen
                                .insert(account.clone(), std::collections::HashSet::from([*addr]));
                            r.registered.insert(account.clone(), vec![*addr]);
                        }
                    }
                }
                Action::ReportIdentity { .. } => r.reported += 1,
                _ => {}
            }
            if self.detail == Detail::Actions {
                r.actions.push((t, a));
            }
        }
    }
}

/// What a replay leaves behind besides its report: the machine in its final state and the
/// event buffers. Dropping it frees them, a walk over every tracked source and thousands of
/// small frees (a millisecond or two for a large log); a process about to exit can
/// `std::mem::forget` it and let the kernel take the memory back at once. (Freed on a thread
/// of their own, as before, they slowed the report instead: Linux tends to start a new thread
/// on its parent's CPU.)
pub struct Leftovers {
    _machine: Machine,
    _buffers: Option<mpsc::Receiver<Vec<TimedEvent>>>,
}

/// Replay one recorded file of any supported kind. An Asterisk log is streamed: it is cut into
/// blocks at line breaks, blocks are parsed in parallel, and this thread runs the state machine
/// over their events in file order, so a log of millions of lines is never held whole (at most
/// a few blocks are in flight). Invalid UTF-8 in a log line is replaced, not fatal: one stray
/// byte in a month of logs must not stop the replay.
///
/// Every thread takes its next block from the file itself (under a lock, a `read` into a buffer
/// it reuses), and this thread, whenever the next block in order is not parsed yet, parses one
/// too instead of waiting: with as many threads as cores, no core idles while work is left.
///
/// The report comes with what the replay leaves behind ([`Leftovers`]).
pub fn replay_file(
    policy: &ValidPolicy,
    path: &Path,
    year: i32,
    detail: Detail,
) -> std::io::Result<(ReplayReport, Leftovers)> {
    let mut file = std::fs::File::open(path)?;
    let mut head = vec![0u8; 64 * 1024];
    let n = read_full(&mut file, &mut head)?;
    head.truncate(n);
    if kind_of(&String::from_utf8_lossy(&head)) != Kind::Log {
        let mut rest = Vec::new();
        file.read_to_end(&mut rest)?;
        head.extend(rest);
        let (events, n, ambiguous) = read_records(&head, year);
        let (mut report, left) = replay_leaving(policy, events.into_iter(), n, detail);
        report.ambiguous = ambiguous;
        return Ok((report, left));
    }
    let helpers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, 8)
        - 1;
    let blocks = std::sync::Mutex::new(Blocks {
        file,
        carry: head,
        next: 0,
        done: false,
    });
    // Bounded: helpers cannot run far ahead of the machine (8 blocks each, about 0.5 MiB of
    // events; with 2 a helper waited on the machine's slow moments, such as an eviction, for
    // a twentieth of its time). Event vectors come back empty to be filled again: fresh
    // memory for every block (page faults, zeroing) cost as much as the parsing.
    let (done_tx, done_rx) = mpsc::sync_channel::<Parsed>(helpers * 8 + 8);
    let (free_tx, free_rx) = mpsc::channel::<Vec<TimedEvent>>();
    let free_rx = std::sync::Mutex::new(free_rx);
    let spare = || {
        free_rx
            .lock()
            .ok()
            .and_then(|rx| rx.try_recv().ok())
            .unwrap_or_default()
    };
    // Block buffers come back the same way, for the same reason.
    let (raw_tx, raw_rx) = mpsc::channel::<Vec<u8>>();
    let raw_rx = std::sync::Mutex::new(raw_rx);
    let spare_raw = || {
        raw_rx
            .lock()
            .ok()
            .and_then(|rx| rx.try_recv().ok())
            .unwrap_or_default()
    };
    let (report, machine) = std::thread::scope(|scope| {
        let placement = Placement::start();
        for h in 0..helpers {
            let done_tx = done_tx.clone();
            let blocks = &blocks;
            let spare = &spare;
            let spare_raw = &spare_raw;
            let allowed = placement.before_spawn(h);
            scope.spawn(move || {
                Placement::started(allowed);
                loop {
                    let mut buf = spare_raw();
                    let parsed = match take_block(blocks, &mut buf) {
                        // From a clear framer: right unless the block before ends inside a
                        // dump or a window, which the merge below checks.
                        Ok(Some((i, len))) => {
                            Ok((i, parse_block(buf, len, year, Framer::default(), spare())))
                        }
                        Ok(None) => return,
                        Err(e) => Err(e),
                    };
                    let failed = parsed.is_err();
                    if done_tx.send(parsed).is_err() || failed {
                        return;
                    }
                }
            });
        }
        placement.finish();
        drop(done_tx);
        // Owned here, so that returning early (a read error) drops it and a helper blocked on
        // sending wakes up and ends instead of holding the scope open.
        let done_rx = done_rx;
        let mut pending: BTreeMap<usize, ParsedBlock> = BTreeMap::new();
        let mut want = 0;
        let mut replayer = Replayer::new(policy, detail);
        let mut input_left = true;
        // The framer's state where the next block starts.
        let mut framer = Framer::default();
        let receive = |parsed: Parsed, pending: &mut BTreeMap<_, _>| -> std::io::Result<()> {
            let (i, v) = parsed?;
            pending.insert(i, v);
            Ok(())
        };
        loop {
            if let Some(mut block) = pending.remove(&want) {
                if block.start != framer {
                    let len = block.raw.len();
                    block = parse_block(block.raw, len, year, framer, block.events);
                }
                framer = block.end;
                replayer.report.records += block.lines;
                replayer.report.ambiguous += block.ambiguous;
                for e in &block.events {
                    replayer.feed(e);
                }
                // Emptied by the thread that takes it: the strings in the events go back to
                // the allocator of the thread that most likely made them.
                let _ = free_tx.send(block.events);
                let _ = raw_tx.send(block.raw);
                want += 1;
                continue;
            }
            match done_rx.try_recv() {
                Ok(parsed) => {
                    receive(parsed, &mut pending)?;
                    continue;
                }
                Err(mpsc::TryRecvError::Disconnected) if !input_left => break,
                Err(_) => {}
            }
            if input_left {
                let mut buf = spare_raw();
                match take_block(&blocks, &mut buf)? {
                    Some((i, len)) => {
                        let start = if i == want { framer } else { Framer::default() };
                        pending.insert(i, parse_block(buf, len, year, start, spare()));
                    }
                    None => input_left = false,
                }
                continue;
            }
            match done_rx.recv() {
                Ok(parsed) => receive(parsed, &mut pending)?,
                Err(_) => break,
            }
        }
        Ok::<_, std::io::Error>((replayer.report, replayer.machine))
    })?;
    let leftovers = Leftovers {
        _machine: machine,
        _buffers: free_rx.into_inner().ok(),
    };
    Ok((report, leftovers))
}

/// Replay recorded files: one is streamed ([`replay_file`]); the records of several are read,
/// put in time order, and replayed together.
pub fn replay_files(
    policy: &ValidPolicy,
    files: &[std::path::PathBuf],
    year: i32,
    detail: Detail,
) -> crate::Result<(ReplayReport, Option<Leftovers>)> {
    if let [only] = files {
        let (report, left) =
            replay_file(policy, only, year, detail).map_err(|e| crate::Error::io(only, e))?;
        return Ok((report, Some(left)));
    }
    let mut all = Vec::new();
    let mut records = 0;
    let mut ambiguous = 0;
    for f in files {
        let bytes = std::fs::read(f).map_err(|e| crate::Error::io(f, e))?;
        let (events, n, a) = read_records(&bytes, year);
        records += n;
        ambiguous += a;
        all.extend(events);
    }
    // Records of several files interleave by time.
    all.sort_by_key(|e| e.at.unwrap_or(0));
    let mut report = replay(policy, all.into_iter(), records, detail);
    report.ambiguous = ambiguous;
    Ok((report, None))
}

/// Where replay's threads start: each parsing thread on a CPU of its own, not queued behind
/// the main thread.
///
/// Linux often puts a new thread on its parent's CPU, and in a virtual machine it is slow to
/// move it to an idle one: an idle virtual CPU looks preempted to the guest's scheduler, which
/// then avoids it until the next periodic balance. Here the parsing thread first ran 1.5-4 ms
/// after it was started, with one of two cores idle, in most runs of a 35 ms replay. So the
/// main thread moves itself to the CPU each helper should use before starting it (a thread
/// inherits its parent's affinity), comes back, and every thread then restores the affinity
/// it was given: after the first few microseconds the scheduler is free again. Any failure
/// (a restricted cpuset, one CPU) leaves placement to the scheduler, as before.
struct Placement {
    /// The affinity the process was given, the CPU the main thread is on, and the others.
    allowed: Option<(rustix::thread::CpuSet, usize, Vec<usize>)>,
}

impl Placement {
    fn start() -> Placement {
        use rustix::thread::{sched_getaffinity, sched_getcpu, CpuSet};
        let allowed = sched_getaffinity(None).ok().and_then(|set| {
            let here = sched_getcpu();
            let others: Vec<usize> = (0..CpuSet::MAX_CPU)
                .filter(|&c| c != here && set.is_set(c))
                .collect();
            (set.is_set(here) && !others.is_empty()).then_some((set, here, others))
        });
        Placement { allowed }
    }

    /// Move the main thread to helper `h`'s CPU, so that the helper starts there; returns the
    /// affinity the helper restores once it runs.
    fn before_spawn(&self, h: usize) -> Option<rustix::thread::CpuSet> {
        let (set, _, others) = self.allowed.as_ref()?;
        pin(others[h % others.len()]).then_some(*set)
    }

    /// In a helper: give it back the whole affinity (it is already running where it should).
    fn started(allowed: Option<rustix::thread::CpuSet>) {
        if let Some(set) = allowed {
            let _ = rustix::thread::sched_setaffinity(None, &set);
        }
    }

    /// Back on the main thread's CPU, with its whole affinity.
    fn finish(self) {
        if let Some((set, here, _)) = self.allowed {
            pin(here);
            let _ = rustix::thread::sched_setaffinity(None, &set);
        }
    }
}

/// Run the calling thread on `cpu` only (the call returns once it has moved there).
fn pin(cpu: usize) -> bool {
    let mut one = rustix::thread::CpuSet::new();
    one.set(cpu);
    rustix::thread::sched_setaffinity(None, &one).is_ok()
}

/// What parsing one block of a log gave.
struct ParsedBlock {
    events: Vec<TimedEvent>,
    /// Lines read.
    lines: usize,
    /// Records refused as ambiguous.
    ambiguous: usize,
    /// The framer's state at the block's start, and at its end.
    start: Framer,
    end: Framer,
    /// The block itself: parsed again from the right start when the block before it ends
    /// inside a dump or a window (rare: a block is 256 KiB).
    raw: Vec<u8>,
}

/// A block's index in the file and what parsing it gave, or the read error.
type Parsed = std::io::Result<(usize, ParsedBlock)>;

/// The part of a log not yet handed out: the file and what was read past the last line break.
struct Blocks {
    file: std::fs::File,
    carry: Vec<u8>,
    next: usize,
    done: bool,
}

/// Fill the front of `buf` with the next block of whole lines (the last line may lack its
/// break at the end of the file) and return its index and length, or `None` at the end.
///
/// `buf` keeps its length from call to call: it is zeroed only when it grows and is then read
/// into as it is (zeroing every block cost as much as reading it), with one `read` a block
/// (`read_to_end` starts small and doubles, six calls a block).
fn take_block(
    blocks: &std::sync::Mutex<Blocks>,
    buf: &mut Vec<u8>,
) -> std::io::Result<Option<(usize, usize)>> {
    const BLOCK: usize = 256 * 1024;
    let mut b = blocks.lock().unwrap_or_else(|e| e.into_inner());
    let b = &mut *b;
    let mut len = b.carry.len();
    if buf.len() < len {
        buf.resize(len, 0);
    }
    buf[..len].copy_from_slice(&b.carry);
    b.carry.clear();
    loop {
        if b.done {
            if len == 0 {
                return Ok(None);
            }
            break;
        }
        let start = len;
        if buf.len() < start + BLOCK {
            buf.resize(start + BLOCK, 0);
        }
        let got = read_full(&mut b.file, &mut buf[start..start + BLOCK])?;
        len += got;
        if got < BLOCK {
            b.done = true;
            continue;
        }
        // Cut after the last line break; a line longer than a block makes it read on.
        if let Some(i) = memchr::memrchr(b'\n', &buf[start..len]) {
            b.carry.extend_from_slice(&buf[start + i + 1..len]);
            len = start + i + 1;
            break;
        }
    }
    let i = b.next;
    b.next += 1;
    Ok(Some((i, len)))
}

/// Parse `raw[..len]`, a block of log lines, through a framer in state `start`, into `events`
/// (emptied first).
fn parse_block(
    mut raw: Vec<u8>,
    len: usize,
    year: i32,
    start: Framer,
    mut events: Vec<TimedEvent>,
) -> ParsedBlock {
    events.clear();
    raw.truncate(len);
    let mut framer = start;
    let (lines, ambiguous) = parse_log_into(&raw, year, &mut framer, &mut events);
    ParsedBlock {
        events,
        lines,
        ambiguous,
        start,
        end: framer,
        raw,
    }
}

/// Fill `buf` as far as the file goes; returns the bytes read (less than `buf.len()` only at
/// the end of the file).
fn read_full(file: &mut std::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

#[derive(PartialEq)]
enum Kind {
    Json,
    Ami,
    Log,
}

/// What a recorded file is, from its first non-empty line: a JSON object, an AMI block
/// (`Key: value`, or the AMI banner), or else Asterisk log lines.
fn kind_of(text: &str) -> Kind {
    let first = text
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim_start();
    let ami_key = first.split_once(": ").is_some_and(|(k, _)| {
        !k.is_empty() && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    });
    if first.starts_with('{') {
        Kind::Json
    } else if first.starts_with("Asterisk Call Manager") || ami_key {
        Kind::Ami
    } else {
        Kind::Log
    }
}

/// Parse log lines; returns the events, the number of lines and of ambiguous records.
fn parse_log(text: &[u8], year: i32) -> (Vec<TimedEvent>, usize, usize) {
    let mut events = Vec::new();
    let (n, ambiguous) = parse_log_into(text, year, &mut Framer::default(), &mut events);
    (events, n, ambiguous)
}

/// Append the events of `text` to `events`, read through `framer` as the daemon reads a log
/// (debug dumps skipped, lines a sender may have written refused); returns the number of
/// lines (as `str::lines` counts them) and of ambiguous records. Lines are found with
/// `memchr`'s vectorised search: `str::lines` was a tenth of the parsing.
fn parse_log_into(
    text: &[u8],
    year: i32,
    framer: &mut Framer,
    events: &mut Vec<TimedEvent>,
) -> (usize, usize) {
    let mut n = 0;
    let mut ambiguous = 0;
    let mut start = 0;
    let ends = memchr::memchr_iter(b'\n', text)
        .map(|i| i + 1)
        // The last line, when the text does not end with a line break.
        .chain((!text.is_empty() && !text.ends_with(b"\n")).then_some(text.len()));
    for end in ends {
        let line = &text[start..end];
        start = end;
        n += 1;
        match framer.read(line, year, 0) {
            Ok(Some(e)) => events.push(e),
            Err(EventError::Ambiguous { .. }) => ambiguous += 1,
            _ => {}
        }
    }
    (n, ambiguous)
}

/// Read a recorded file of any supported kind, as the daemon reads it; returns the events, the
/// number of records and of ambiguous ones.
pub fn read_records(bytes: &[u8], year: i32) -> (Vec<TimedEvent>, usize, usize) {
    let text = String::from_utf8_lossy(bytes);
    match kind_of(&text) {
        Kind::Json => {
            let mut ambiguous = 0;
            let mut n = 0;
            let mut events = Vec::new();
            for l in text.lines().filter(|l| !l.trim().is_empty()) {
                n += 1;
                match json::parse_logged_line(l) {
                    Ok(Some(e)) => events.push(e),
                    Err(EventError::Ambiguous { .. }) => ambiguous += 1,
                    _ => {}
                }
            }
            (events, n, ambiguous)
        }
        Kind::Ami => {
            let mut reader = ami::AmiReader::new();
            reader.feed(text.as_bytes());
            reader.feed(b"\r\n\r\n");
            let mut events = Vec::new();
            let mut n = 0;
            let mut ambiguous = 0;
            while let Some(item) = reader.next_event() {
                n += 1;
                match item {
                    Ok(t) => events.push(t),
                    Err(EventError::Ambiguous { .. }) => ambiguous += 1,
                    Err(_) => {}
                }
            }
            (events, n, ambiguous)
        }
        Kind::Log => parse_log(bytes, year),
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    /// The policy with every default.
    fn empty_policy() -> ValidPolicy {
        pbxfw_core::Policy::from_toml("")
            .unwrap()
            .validate()
            .unwrap()
    }

    /// The recorded Asterisk log fixture, repeated until it is at least `len` bytes long.
    fn fixture_repeated(len: usize) -> String {
        let fixture = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/events/asterisk-full.log"),
        )
        .unwrap();
        let mut text = String::new();
        while text.len() < len {
            text.push_str(&fixture);
        }
        text
    }

    /// Placing the parsing threads leaves no pinning behind: each helper runs with the
    /// affinity the process had, the main thread gets it back, and the helpers started where
    /// they were sent (when the machine has more than one CPU).
    #[test]
    fn placement_gives_every_thread_its_affinity_back() {
        use rustix::thread::{sched_getaffinity, sched_getcpu};
        let before = sched_getaffinity(None).unwrap();
        let placement = Placement::start();
        let sent: Vec<usize> = placement
            .allowed
            .as_ref()
            .map(|(_, _, others)| others.iter().copied().cycle().take(3).collect())
            .unwrap_or_default();
        let seen = std::thread::scope(|scope| {
            let threads: Vec<_> = (0..3)
                .map(|h| {
                    let allowed = placement.before_spawn(h);
                    scope.spawn(move || {
                        let cpu = sched_getcpu();
                        Placement::started(allowed);
                        (cpu, sched_getaffinity(None).unwrap())
                    })
                })
                .collect();
            placement.finish();
            assert_eq!(sched_getaffinity(None).unwrap(), before);
            threads
                .into_iter()
                .map(|t| t.join().unwrap())
                .collect::<Vec<_>>()
        });
        for (h, (cpu, affinity)) in seen.into_iter().enumerate() {
            assert_eq!(affinity, before, "helper {h}");
            if let Some(want) = sent.get(h) {
                assert_eq!(cpu, *want, "helper {h} started elsewhere");
            }
        }
    }

    /// A log read from a pipe (`<(zcat full.1.gz)`) reports what the same log read from a file
    /// does.
    #[test]
    fn a_log_from_a_pipe_replays_as_from_a_file() {
        use std::os::fd::AsRawFd;
        let text = fixture_repeated(1024 * 1024);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("full.log");
        std::fs::write(&path, &text).unwrap();
        let policy = empty_policy();
        let from_file = replay_file(&policy, &path, 2026, Detail::Actions)
            .unwrap()
            .0;

        let (reader, mut writer) = std::io::pipe().unwrap();
        let fd = Path::new("/proc/self/fd").join(reader.as_raw_fd().to_string());
        let feeder = std::thread::spawn(move || writer.write_all(text.as_bytes()));
        let from_pipe = replay_file(&policy, &fd, 2026, Detail::Actions).unwrap().0;
        feeder.join().unwrap().unwrap();
        drop(reader);
        assert!(from_file.events > 500, "{}", from_file.events);
        assert_eq!(
            serde_json::to_value(&from_pipe).unwrap(),
            serde_json::to_value(&from_file).unwrap()
        );
    }

    /// The streamed replay (blocks cut at line breaks, parsed in parallel, fed in order) reports
    /// exactly what replaying the whole text at once does, across many blocks.
    #[test]
    fn streamed_replay_equals_the_whole_text() {
        let mut text = fixture_repeated(3 * 1024 * 1024);
        // A last line without a line break, and a stray invalid byte inside a line.
        text.push_str("[Nov 20 10:15:30] NOTICE[1234] chan_sip.c: no newline at the end");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.log");
        let mut bytes = text.clone().into_bytes();
        let at = bytes.len() - 10;
        bytes[at] = 0xff;
        std::fs::write(&path, &bytes).unwrap();
        let policy = empty_policy();

        let streamed = replay_file(&policy, &path, 2026, Detail::Actions)
            .unwrap()
            .0;
        // The summary is the same report without the list of actions.
        let mut summary = replay_file(&policy, &path, 2026, Detail::Summary)
            .unwrap()
            .0;
        assert!(summary.actions.is_empty() && !streamed.actions.is_empty());
        summary.actions.clone_from(&streamed.actions);
        assert_eq!(
            serde_json::to_value(&summary).unwrap(),
            serde_json::to_value(&streamed).unwrap()
        );
        let (events, n, ambiguous) = read_records(&bytes, 2026);
        let mut whole = replay(&policy, events.into_iter(), n, Detail::Actions);
        whole.ambiguous = ambiguous;
        assert_eq!(streamed.records, text.lines().count());
        assert!(streamed.events > 500, "{}", streamed.events);
        assert_eq!(
            serde_json::to_value(&streamed).unwrap(),
            serde_json::to_value(&whole).unwrap()
        );
    }

    /// A line longer than a block (a pasted SDP body, a runaway debug line) is read whole,
    /// and the lines around it keep their order.
    #[test]
    fn a_line_longer_than_a_block_is_read_whole() {
        let fail = |a: &str| {
            format!("[Nov 20 10:15:32] NOTICE[1] res_pjsip/pjsip_distributor.c: Request 'REGISTER' from '<sip:1@x>' failed for '{a}:5060' (callid: 1) - No matching endpoint found\n")
        };
        // Three unknown-account failures ban; each source's third comes after the long line.
        let mut text = String::new();
        for a in ["203.0.113.1", "203.0.113.1", "203.0.113.2"] {
            text.push_str(&fail(a));
        }
        text.push_str("[Nov 20 10:15:32] VERBOSE[1] pbx.c: ");
        text.push_str(&"x".repeat(700 * 1024));
        text.push('\n');
        for a in ["203.0.113.1", "203.0.113.2", "203.0.113.2"] {
            text.push_str(&fail(a));
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("long.log");
        std::fs::write(&path, &text).unwrap();
        let policy = empty_policy();
        let streamed = replay_file(&policy, &path, 2026, Detail::Actions)
            .unwrap()
            .0;
        let (events, n, ambiguous) = read_records(text.as_bytes(), 2026);
        let mut whole = replay(&policy, events.into_iter(), n, Detail::Actions);
        whole.ambiguous = ambiguous;
        assert_eq!(streamed.records, 7);
        assert_eq!(streamed.events, 6);
        assert_eq!(streamed.banned.len(), 2, "{:?}", streamed.banned);
        assert_eq!(
            serde_json::to_value(&streamed).unwrap(),
            serde_json::to_value(&whole).unwrap()
        );
    }

    /// A pjsip debug dump holding forged lines, across the boundary between two blocks parsed
    /// in parallel: the streamed replay reads it as one pass over the whole log does, and the
    /// forged lines name nobody.
    #[test]
    fn a_dump_across_blocks_is_skipped_as_in_one_pass() {
        let line = |a: &str| {
            format!("[Nov 20 10:15:32] NOTICE[1] chan_sip.c: Registration from '<sip:1@x>' failed for '{a}:5060' - Wrong password\n")
        };
        let mut body = String::new();
        // pjsip dumps at most a datagram, 65,535 bytes.
        for _ in 0..500 {
            body.push_str(&line("10.9.9.9"));
        }
        assert!(body.len() < 65_535);
        let header = format!(
            "[Nov 20 10:15:31] VERBOSE[7] res_pjsip_logger.c: <--- Received SIP request ({} bytes) from UDP:203.0.113.5:5060 --->\n",
            body.len()
        );
        for at in [200 * 1024, 255 * 1024, 256 * 1024 - 3] {
            let mut text = String::new();
            while text.len() < at {
                text.push_str(&line("203.0.113.7"));
            }
            text.push_str(&header);
            text.push_str(&body);
            text.push('\n');
            for _ in 0..50 {
                text.push_str(&line("203.0.113.8"));
            }
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("dump.log");
            std::fs::write(&path, &text).unwrap();
            let policy = empty_policy();
            let streamed = replay_file(&policy, &path, 2026, Detail::Actions)
                .unwrap()
                .0;
            let (events, n, ambiguous) = read_records(text.as_bytes(), 2026);
            assert!(events
                .iter()
                .all(|e| e.event.source().to_string() != "10.9.9.9"));
            let mut whole = replay(&policy, events.into_iter(), n, Detail::Actions);
            whole.ambiguous = ambiguous;
            assert_eq!(
                serde_json::to_value(&streamed).unwrap(),
                serde_json::to_value(&whole).unwrap(),
                "dump at {at}"
            );
            assert!(streamed
                .banned
                .keys()
                .all(|p| p.to_string() != "10.9.9.9/32"));
            assert!(!streamed.banned.is_empty());
        }
    }

    #[test]
    fn lines_are_counted_as_str_lines_counts_them() {
        for text in ["", "\n", "a", "a\n", "a\nb", "a\r\nb\r\n", "\n\n", "a\n\nb"] {
            let mut events = Vec::new();
            assert_eq!(
                parse_log_into(text.as_bytes(), 2026, &mut Framer::default(), &mut events).0,
                text.lines().count(),
                "{text:?}"
            );
        }
    }
}
