//! The whole reload as one netlink batch, built in process: the same transaction `nft -f`
//! sends for the script [`crate::lower`] prints (docs/design.md, "The netlink load"), without
//! printing 100,000 set elements as text for `nft` to parse back.
//!
//! The batch follows the script's reload idiom message for message: the table is created if
//! absent and its rules flushed; every set, map and chain is declared (dynamic sets keep their
//! elements); the static sets, the maps and the fingerprint are deleted and declared again
//! with their elements; then the rules, each preceded by the anonymous sets it looks up. Rules
//! are encoded as nft 1.0 encodes the same text: the same implicit dependencies (`ip saddr`
//! needs `meta nfproto ipv4` in an `inet` table), the same merged payload loads, the same set
//! flags, key types and user data, so that `nft list` shows the same ruleset whichever path
//! loaded it (checked by `tests/kernel_load_paths.rs`).

use std::collections::HashMap;

use pbxfw_core::{BasePolicy, CtState, Element, Family, L4Proto, Map, MarkOp, Ruleset, SetKind};

use super::{
    cstr, key_bytes, Msg, NetlinkError, NFNL_SUBSYS_NFTABLES, NFPROTO_INET, NFTA_DATA_VALUE,
    NFTA_LIST_ELEM, NFTA_SET_ELEM_FLAGS, NFTA_SET_ELEM_KEY, NFTA_SET_ELEM_LIST_ELEMENTS,
    NFTA_SET_ELEM_LIST_SET, NFTA_SET_ELEM_LIST_TABLE, NFTA_SET_ELEM_TIMEOUT,
    NFT_SET_ELEM_INTERVAL_END, NLM_F_ACK, NLM_F_CREATE, NLM_F_REQUEST,
};
use crate::stmt::{self, Final, Line, PortDir, Reject, SourceKey, Stmt, VmapKey};
use crate::{LowerError, Options, FINGERPRINT_SET, REJECT_CHAIN};

const NLM_F_APPEND: u16 = 0x800;
const NLM_F_EXCL: u16 = 0x200;

const NFT_MSG_NEWTABLE: u16 = 0;
const NFT_MSG_NEWCHAIN: u16 = 3;
const NFT_MSG_NEWRULE: u16 = 6;
const NFT_MSG_DELRULE: u16 = 8;
const NFT_MSG_NEWSET: u16 = 9;
const NFT_MSG_DELSET: u16 = 11;
const NFT_MSG_NEWSETELEM: u16 = 12;

const NFTA_SET_ELEM_LIST_SET_ID: u16 = 4;
const NFTA_SET_ELEM_DATA: u16 = 2;
const NFTA_SET_ELEM_USERDATA: u16 = 6;
const NFTA_DATA_VERDICT: u16 = 2;
const NFTA_VERDICT_CODE: u16 = 1;
const NFTA_VERDICT_CHAIN: u16 = 2;

const NFT_SET_ANONYMOUS: u32 = 0x1;
const NFT_SET_CONSTANT: u32 = 0x2;
const NFT_SET_INTERVAL: u32 = 0x4;
const NFT_SET_MAP: u32 = 0x8;
const NFT_SET_TIMEOUT: u32 = 0x10;
const NFT_SET_EVAL: u32 = 0x20;

/// nft's data types, as it records them in a set's key type.
const TYPE_NFPROTO: u32 = 2;
const TYPE_IPADDR: u32 = 7;
const TYPE_IP6ADDR: u32 = 8;
const TYPE_INET_PROTOCOL: u32 = 12;
const TYPE_INET_SERVICE: u32 = 13;
const TYPE_ICMP_TYPE: u32 = 14;
const TYPE_CT_STATE: u32 = 26;
const TYPE_ICMPV6_TYPE: u32 = 29;
const TYPE_IFNAME: u32 = 41;
const NFT_DATA_VERDICT: u32 = 0xffff_ff00;

/// Verdict codes.
const NF_DROP: i32 = 0;
const NF_ACCEPT: i32 = 1;
const NFT_JUMP: i32 = -3;
const NFT_GOTO: i32 = -4;
const NFT_RETURN: i32 = -5;

/// Register 1 and the verdict register, in the numbering nft uses.
const REG_VERDICT: u32 = 0;
const REG_1: u32 = 1;

const META_IIF: u32 = 4;
const META_IIFNAME: u32 = 6;
const META_NFPROTO: u32 = 15;
const META_L4PROTO: u32 = 16;
const CT_STATE: u32 = 0;
const CT_DIRECTION: u32 = 1;
const CT_MARK: u32 = 3;
const BASE_NETWORK: u32 = 1;
const BASE_TRANSPORT: u32 = 2;
const BASE_INNER: u32 = 3;
const CMP_EQ: u32 = 0;
const CMP_NEQ: u32 = 1;
const CMP_LTE: u32 = 3;
const CMP_GTE: u32 = 5;

/// User data of sets (libnftnl's `NFTNL_UDATA_SET_*`), of elements and of rules.
const UDATA_SET_KEYBYTEORDER: u8 = 0;
const UDATA_SET_DATABYTEORDER: u8 = 1;
const UDATA_SET_MERGE_ELEMENTS: u8 = 2;
const UDATA_SET_KEY_TYPEOF: u8 = 3;
const UDATA_SET_DATA_TYPEOF: u8 = 4;
const UDATA_SET_DATA_INTERVAL: u8 = 6;
const UDATA_SET_COMMENT: u8 = 7;
const UDATA_SET_ELEM_FLAGS: u8 = 1;
const UDATA_RULE_COMMENT: u8 = 0;
const BYTEORDER_HOST: u32 = 1;
const BYTEORDER_BIG: u32 = 2;
/// The interval runs to the end of the key space (it has no end element).
const SET_ELEM_F_INTERVAL_OPEN: u32 = 1;

/// The largest element list one message carries (the list is one attribute: 16-bit length).
const MAX_ELEMENTS_BYTES: usize = 60 * 1024;

/// The reload of `rs` with its seeds: the messages of one batch, in order, each with what it
/// does (for the error when the kernel refuses one). The IR is checked as [`crate::lower`]
/// checks it.
pub fn messages(
    rs: &Ruleset,
    opts: &Options,
    seeds: &std::collections::BTreeMap<String, Vec<Element>>,
) -> Result<Vec<(Vec<u8>, String)>, LowerError> {
    messages_marked(rs, opts, seeds, &rs.fingerprint(), Start::Reload)
}

/// The batch of a load into a namespace that has no table of this name yet: the same
/// messages as [`messages`] without the flush and the deletions, each set declared once (see
/// `Start::Fresh`).
pub fn new_load_messages(
    rs: &Ruleset,
    opts: &Options,
    seeds: &std::collections::BTreeMap<String, Vec<Element>>,
) -> Result<Vec<(Vec<u8>, String)>, LowerError> {
    messages_marked(rs, opts, seeds, &rs.fingerprint(), Start::Fresh)
}

/// Whether the batch may find the table loaded already.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Start {
    /// The reload idiom: whatever is loaded, the batch leaves exactly `rs`.
    Reload,
    /// The table is absent (asked just before): every set is declared once, with its
    /// elements, and nothing is flushed or deleted. The kernel has nothing to free after such
    /// a transaction; after a delete it frees the objects only once an RCU grace period has
    /// passed, and closing any nf_tables socket of the namespace waits for that (about 10 ms
    /// on an idle 2-vCPU machine, a new load's whole budget). The table is created with
    /// `NLM_F_EXCL`: if it appeared meanwhile, the kernel refuses the batch, which changes
    /// nothing, and the reload idiom is sent instead: an `EEXIST` at the table can mean only
    /// that.
    Fresh,
}

/// [`messages`], the fingerprint given (computed by the caller already).
fn messages_marked(
    rs: &Ruleset,
    opts: &Options,
    seeds: &std::collections::BTreeMap<String, Vec<Element>>,
    fingerprint: &str,
    start: Start,
) -> Result<Vec<(Vec<u8>, String)>, LowerError> {
    crate::check(rs)?;
    let mut b = Batch {
        table: &opts.table,
        out: Vec::new(),
        set_ids: HashMap::new(),
        next_id: 1,
    };
    let packet_path = crate::packet_path_sets(rs);
    let chains = crate::ordered_chains(rs);
    let decl = |name: &str, set: &pbxfw_core::Set| -> SetDecl {
        let mut d = SetDecl::addresses(set.family);
        match &set.kind {
            SetKind::Static(s) if s.is_hosts() => {
                d.size = Some(crate::hash_set_size(s.elements().len()))
            }
            SetKind::Static(_) => d.flags = NFT_SET_INTERVAL,
            SetKind::Dynamic(dy) => {
                d.flags = if packet_path.contains(name) {
                    NFT_SET_TIMEOUT | NFT_SET_EVAL
                } else if dy.interval {
                    NFT_SET_INTERVAL | NFT_SET_TIMEOUT
                } else {
                    NFT_SET_TIMEOUT
                };
                d.timeout_ms = dy.timeout.map(|s| s as u64 * 1000);
                d.size = Some(dy.size);
            }
        }
        d.comment = Some(crate::sanitize_comment(&set.comment, 100));
        d
    };
    let map_decl = |map: &Map| -> SetDecl {
        let (key_type, key_len, order) = match map {
            Map::Src(m) => (addr_type(m.family()), addr_len(m.family()), BYTEORDER_BIG),
            Map::Iif(_) => (TYPE_IFNAME, 16, BYTEORDER_HOST),
        };
        let interval = matches!(map, Map::Src(_));
        SetDecl {
            flags: NFT_SET_MAP | if interval { NFT_SET_INTERVAL } else { 0 },
            key_type,
            key_len,
            verdicts: true,
            udata: udata(&[
                (UDATA_SET_KEYBYTEORDER, &order.to_ne_bytes()),
                (UDATA_SET_DATABYTEORDER, &0u32.to_ne_bytes()),
                (UDATA_SET_DATA_INTERVAL, &0u32.to_ne_bytes()),
            ]),
            ..SetDecl::default()
        }
    };
    let fingerprint_decl = |comment: Option<&str>| SetDecl {
        comment: comment.map(str::to_string),
        ..SetDecl::addresses(Family::Ipv6)
    };

    // 1. The table, its rules flushed; everything declared (created where missing).
    let reload = start == Start::Reload;
    b.table(!reload);
    if reload {
        b.flush();
    }
    b.chain(REJECT_CHAIN, None);
    for (name, chain) in &chains {
        b.chain(name, chain.hook);
    }
    if reload {
        b.set(FINGERPRINT_SET, &fingerprint_decl(None));
    }
    for (name, set) in &rs.sets {
        if reload || !matches!(set.kind, SetKind::Static(_)) {
            b.set(name, &decl(name, set));
        }
    }
    if reload {
        for (name, map) in &rs.maps {
            b.set(name, &map_decl(map));
        }
        // 2. Static sets, maps and the fingerprint replaced exactly.
        b.del_set(FINGERPRINT_SET);
        for (name, set) in &rs.sets {
            if matches!(set.kind, SetKind::Static(_)) {
                b.del_set(name);
            }
        }
        for name in rs.maps.keys() {
            b.del_set(name);
        }
    }
    // 3. The new contents, then the rules.
    b.set(
        FINGERPRINT_SET,
        &fingerprint_decl(Some("the loaded ruleset's fingerprint")),
    );
    let fp: std::net::Ipv6Addr = crate::fingerprint_element(fingerprint)
        .parse()
        .expect("a fingerprint element is an IPv6 address");
    b.elements(FINGERPRINT_SET, hash_elements(fp.octets().to_vec()));
    for (name, set) in &rs.sets {
        let SetKind::Static(s) = &set.kind else {
            continue;
        };
        b.set(name, &decl(name, set));
        let f = set.family;
        let elems = if s.is_hosts() {
            s.elements()
                .iter()
                .flat_map(|(p, _)| hash_elements(key_bytes(f, p.start())))
                .collect()
        } else {
            intervals(
                f.max_value(),
                s.elements().iter().map(|(p, _)| (p.start(), p.end(), None)),
                |v| key_bytes(f, v),
            )
        };
        b.elements(name, elems);
    }
    for (name, map) in &rs.maps {
        b.set(name, &map_decl(map));
        let elems = match map {
            Map::Src(m) => {
                let f = m.family();
                intervals(
                    f.max_value(),
                    m.entries()
                        .iter()
                        .map(|(r, c)| (r.first, r.last, Some(goto(c)))),
                    |v| key_bytes(f, v),
                )
            }
            Map::Iif(m) => m
                .iter()
                .map(|(i, c)| {
                    stmt::iface(i)?;
                    Ok(Elem {
                        key: ifname(i),
                        data: Some(goto(c)),
                        ..Elem::default()
                    })
                })
                .collect::<Result<_, LowerError>>()?,
        };
        b.elements(name, elems);
    }
    for line in stmt::reject_chain() {
        b.rule(REJECT_CHAIN, &line);
    }
    for (name, chain) in &chains {
        for line in stmt::chain_lines(rs, &chain.rules, opts)? {
            b.rule(name, &line);
        }
    }
    // 4. Seeds: elements restored into dynamic sets, in the same transaction.
    for (set, elems) in seeds {
        let s = rs
            .sets
            .get(set.as_str())
            .ok_or_else(|| LowerError::Unsupported {
                backend: crate::BACKEND,
                feature: format!("a seed for set {set}, which the ruleset does not have"),
            })?;
        let f = s.family;
        let interval = matches!(&s.kind, SetKind::Dynamic(d) if d.interval);
        let mut out = Vec::new();
        for e in elems {
            let timeout = e.timeout.map(|t| t.as_secs().max(1) * 1000);
            if interval {
                let mut v = intervals(
                    f.max_value(),
                    [(e.prefix.start(), e.prefix.end(), None)].into_iter(),
                    |v| key_bytes(f, v),
                );
                // No leading "nothing below" marker: the set has other elements already.
                v.retain(|el| !(el.end && el.key.iter().all(|b| *b == 0)));
                if let Some(first) = v.first_mut() {
                    first.timeout_ms = timeout;
                }
                out.extend(v);
            } else {
                out.push(Elem {
                    key: key_bytes(f, e.prefix.start()),
                    timeout_ms: timeout,
                    ..Elem::default()
                });
            }
        }
        if !out.is_empty() {
            b.elements(set, out);
        }
    }
    Ok(b.out)
}

/// Load `rs` in one kernel transaction: all of it or, when the kernel refuses a message,
/// nothing (the error names the message). `fingerprint` is `rs`'s, when the caller has it.
pub fn load(
    rs: &Ruleset,
    opts: &Options,
    seeds: &std::collections::BTreeMap<String, Vec<Element>>,
    fingerprint: Option<&str>,
) -> Result<(), LoadError> {
    let fingerprint = match fingerprint {
        Some(fp) => {
            // The kernel is marked with it and later compared with it: a stale one would go
            // unnoticed.
            debug_assert_eq!(fp, rs.fingerprint(), "the fingerprint of another ruleset");
            fp.to_string()
        }
        None => rs.fingerprint(),
    };
    // Asking costs one round trip; a wrong "absent" is caught by the kernel (`Start::Fresh`).
    let absent = matches!(super::table_handle(&opts.table), Ok(None));
    load_as(rs, opts, seeds, &fingerprint, absent)
}

/// [`load`], told whether the table is absent. Public for the test of a table that appears
/// between the question and the batch: `absent` when it is not must still leave exactly `rs`.
#[doc(hidden)]
pub fn load_as(
    rs: &Ruleset,
    opts: &Options,
    seeds: &std::collections::BTreeMap<String, Vec<Element>>,
    fingerprint: &str,
    absent: bool,
) -> Result<(), LoadError> {
    if absent {
        let msgs = messages_marked(rs, opts, seeds, fingerprint, Start::Fresh)
            .map_err(LoadError::Lower)?;
        match send(&msgs) {
            // The table (the batch's first message) exists: the reload replaces what is there.
            Err((Some(0), e)) if e.raw_os_error() == Some(libc::EEXIST) => {}
            done => return done.map_err(|(i, e)| refused(&msgs, i, e)),
        }
    }
    let msgs =
        messages_marked(rs, opts, seeds, fingerprint, Start::Reload).map_err(LoadError::Lower)?;
    send(&msgs).map_err(|(i, e)| refused(&msgs, i, e))
}

/// Send one batch; on a refusal, the index of the message the kernel refused.
fn send(msgs: &[(Vec<u8>, String)]) -> Result<(), (Option<usize>, std::io::Error)> {
    let bytes: Vec<&[u8]> = msgs.iter().map(|(m, _)| m.as_slice()).collect();
    super::send_batch(&bytes)
}

/// The error of a batch the kernel refused at message `i` (none: the socket failed).
fn refused(msgs: &[(Vec<u8>, String)], i: Option<usize>, e: std::io::Error) -> LoadError {
    match i {
        Some(i) => LoadError::Refused {
            // The batch header itself (not root, say) is no message of the ruleset.
            what: msgs
                .get(i)
                .map_or_else(|| "the batch".to_string(), |(_, w)| w.clone()),
            source: e,
        },
        None => LoadError::Netlink(NetlinkError::Socket(e)),
    }
}

/// Why a netlink load failed.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The ruleset could not be lowered.
    #[error(transparent)]
    Lower(LowerError),
    /// The socket failed.
    #[error(transparent)]
    Netlink(NetlinkError),
    /// The kernel refused the transaction at one message (nothing changed).
    #[error("the kernel refused the load at {what}: {source}")]
    Refused {
        /// The message it refused.
        what: String,
        /// errno from the kernel.
        #[source]
        source: std::io::Error,
    },
}

fn addr_type(f: Family) -> u32 {
    match f {
        Family::Ipv4 => TYPE_IPADDR,
        Family::Ipv6 => TYPE_IP6ADDR,
    }
}

fn addr_len(f: Family) -> u32 {
    f.bits() as u32 / 8
}

fn ifname(name: &str) -> Vec<u8> {
    let mut k = name.as_bytes().to_vec();
    k.resize(16, 0);
    k
}

fn goto(chain: &str) -> (i32, Option<String>) {
    (NFT_GOTO, Some(chain.to_string()))
}

/// libnftnl's user-data TLVs: a type byte, a length byte, the value.
fn udata(items: &[(u8, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (t, v) in items {
        out.push(*t);
        out.push(v.len() as u8);
        out.extend_from_slice(v);
    }
    out
}

/// A set or map declaration.
#[derive(Debug, Clone, Default)]
struct SetDecl {
    flags: u32,
    key_type: u32,
    key_len: u32,
    /// A verdict map.
    verdicts: bool,
    timeout_ms: Option<u64>,
    size: Option<u32>,
    /// The comment (named sets), appended to `udata`.
    comment: Option<String>,
    udata: Vec<u8>,
}

impl SetDecl {
    fn addresses(f: Family) -> SetDecl {
        SetDecl {
            key_type: addr_type(f),
            key_len: addr_len(f),
            udata: udata(&[(UDATA_SET_KEYBYTEORDER, &BYTEORDER_BIG.to_ne_bytes())]),
            ..SetDecl::default()
        }
    }
}

/// One set element.
#[derive(Debug, Clone, Default)]
struct Elem {
    key: Vec<u8>,
    /// The interval-end marker.
    end: bool,
    /// The last interval runs to the end of the key space.
    open: bool,
    data: Option<(i32, Option<String>)>,
    timeout_ms: Option<u64>,
}

fn hash_elements(key: Vec<u8>) -> Vec<Elem> {
    vec![Elem {
        key,
        ..Elem::default()
    }]
}

/// Sorted, disjoint ranges as an interval set holds them, as nft writes them: "nothing" from
/// zero up to the first range (an end marker at zero) unless it starts at zero, then each
/// range's start and, flagged, the value after its last (none for a range that reaches
/// `max`: it is marked open instead).
fn intervals(
    max: u128,
    ranges: impl Iterator<Item = (u128, u128, Option<(i32, Option<String>)>)>,
    key: impl Fn(u128) -> Vec<u8>,
) -> Vec<Elem> {
    let mut out = Vec::new();
    for (first, last, data) in ranges {
        if out.is_empty() && first != 0 {
            out.push(Elem {
                key: key(0),
                end: true,
                ..Elem::default()
            });
        }
        out.push(Elem {
            key: key(first),
            open: last >= max,
            data,
            ..Elem::default()
        });
        if last < max {
            out.push(Elem {
                key: key(last + 1),
                end: true,
                ..Elem::default()
            });
        }
    }
    out
}

/// What the rule's statements so far have established, as nft's dependency context: later
/// statements that need a family or a protocol get a dependency only without it.
#[derive(Debug, Clone, Copy, Default)]
struct Context {
    family: Option<Family>,
    proto: Option<L4Proto>,
}

/// Expressions of one rule.
struct Exprs {
    m: Msg,
}

impl Exprs {
    fn expr(&mut self, name: &str, body: impl FnOnce(&mut Msg)) {
        self.m.begin(NFTA_LIST_ELEM);
        self.m.attr(1, &cstr(name));
        self.m.begin(2);
        body(&mut self.m);
        self.m.end();
        self.m.end();
    }

    fn meta(&mut self, key: u32) {
        self.expr("meta", |m| {
            m.attr(2, &key.to_be_bytes());
            m.attr(1, &REG_1.to_be_bytes());
        });
    }

    fn cmp(&mut self, op: u32, data: &[u8]) {
        self.expr("cmp", |m| {
            m.attr(1, &REG_1.to_be_bytes());
            m.attr(2, &op.to_be_bytes());
            m.data(3, data);
        });
    }

    fn payload(&mut self, base: u32, offset: u32, len: u32) {
        self.expr("payload", |m| {
            m.attr(1, &REG_1.to_be_bytes());
            m.attr(2, &base.to_be_bytes());
            m.attr(3, &offset.to_be_bytes());
            m.attr(4, &len.to_be_bytes());
        });
    }

    fn bitwise(&mut self, mask: &[u8], xor: &[u8]) {
        self.expr("bitwise", |m| {
            m.attr(1, &REG_1.to_be_bytes());
            m.attr(2, &REG_1.to_be_bytes());
            m.attr(3, &(mask.len() as u32).to_be_bytes());
            m.data(4, mask);
            m.data(5, xor);
        });
    }

    fn lookup(&mut self, set: &str, id: Option<u32>, verdict: bool) {
        self.lookup_with(set, id, verdict, false);
    }

    /// A lookup that holds when the key is *not* in the set (`NFT_LOOKUP_F_INV`).
    fn lookup_not(&mut self, set: &str, id: Option<u32>) {
        self.lookup_with(set, id, false, true);
    }

    fn lookup_with(&mut self, set: &str, id: Option<u32>, verdict: bool, inverted: bool) {
        self.expr("lookup", |m| {
            m.attr(2, &REG_1.to_be_bytes());
            if verdict {
                m.attr(3, &REG_VERDICT.to_be_bytes());
            }
            m.attr(1, &cstr(set));
            if let Some(id) = id {
                m.attr(4, &id.to_be_bytes());
            }
            if inverted {
                m.attr(5, &1u32.to_be_bytes()); // NFTA_LOOKUP_FLAGS: NFT_LOOKUP_F_INV
            }
        });
    }

    /// Holds when the register is outside `from..=to` (`NFT_RANGE_NEQ`).
    fn range_neq(&mut self, from: &[u8], to: &[u8]) {
        self.expr("range", |m| {
            m.attr(1, &REG_1.to_be_bytes());
            m.attr(2, &1u32.to_be_bytes()); // NFT_RANGE_NEQ
            m.data(3, from);
            m.data(4, to);
        });
    }

    fn ct(&mut self, key: u32) {
        self.expr("ct", |m| {
            m.attr(2, &key.to_be_bytes());
            m.attr(1, &REG_1.to_be_bytes());
        });
    }

    fn limit(m: &mut Msg, rate: pbxfw_core::Rate, burst: u32, over: bool) {
        let unit: u64 = match rate.per {
            pbxfw_core::RateUnit::Second => 1,
            pbxfw_core::RateUnit::Minute => 60,
            pbxfw_core::RateUnit::Hour => 3600,
            pbxfw_core::RateUnit::Day => 86400,
        };
        m.attr(1, &(rate.packets as u64).to_be_bytes());
        m.attr(2, &unit.to_be_bytes());
        m.attr(3, &burst.to_be_bytes());
        m.attr(4, &0u32.to_be_bytes()); // packets
        m.attr(5, &u32::from(over).to_be_bytes()); // NFT_LIMIT_F_INV: "over"
    }

    fn verdict(&mut self, code: i32, chain: Option<&str>) {
        self.expr("immediate", |m| {
            m.attr(1, &REG_VERDICT.to_be_bytes());
            m.begin(2);
            verdict_data(m, code, chain);
            m.end();
        });
    }

    fn reject(&mut self, kind: u32, code: u8) {
        self.expr("reject", |m| {
            m.attr(1, &kind.to_be_bytes());
            m.attr(2, &[code]);
        });
    }
}

fn verdict_data(m: &mut Msg, code: i32, chain: Option<&str>) {
    m.begin(NFTA_DATA_VERDICT);
    m.attr(NFTA_VERDICT_CODE, &code.to_be_bytes());
    if let Some(c) = chain {
        m.attr(NFTA_VERDICT_CHAIN, &cstr(c));
    }
    m.end();
}

fn proto_number(p: L4Proto) -> u8 {
    match p {
        L4Proto::Tcp => 6,
        L4Proto::Udp => 17,
        L4Proto::Icmp => 1,
        L4Proto::Icmpv6 => 58,
    }
}

fn nfproto(f: Family) -> u8 {
    match f {
        Family::Ipv4 => 2,
        Family::Ipv6 => 10,
    }
}

fn ct_bit(s: CtState) -> u32 {
    match s {
        CtState::Invalid => 1,
        CtState::Established => 2,
        CtState::Related => 4,
        CtState::New => 8,
    }
}

fn final_code(f: &Final) -> Option<(i32, Option<&str>)> {
    Some(match f {
        Final::Accept => (NF_ACCEPT, None),
        Final::Drop => (NF_DROP, None),
        Final::Return => (NFT_RETURN, None),
        Final::Jump(c) => (NFT_JUMP, Some(c.as_str())),
        Final::Goto(c) => (NFT_GOTO, Some(c.as_str())),
        _ => return None,
    })
}

/// The batch being built.
struct Batch<'a> {
    table: &'a str,
    out: Vec<(Vec<u8>, String)>,
    /// The transaction's id of each set declared in it, by name (the last declaration's).
    set_ids: HashMap<String, u32>,
    next_id: u32,
}

impl Batch<'_> {
    fn msg(&self, ty: u16, flags: u16) -> Msg {
        Msg::new(
            (NFNL_SUBSYS_NFTABLES << 8) | ty,
            NLM_F_REQUEST | NLM_F_ACK | flags,
            0,
            NFPROTO_INET,
            0,
        )
    }

    fn push(&mut self, m: Msg, what: String) {
        self.out.push((m.finish(), what));
    }

    /// The table, created where missing; with `exclusive`, refused where present.
    fn table(&mut self, exclusive: bool) {
        let flags = NLM_F_CREATE | if exclusive { NLM_F_EXCL } else { 0 };
        let mut m = self.msg(NFT_MSG_NEWTABLE, flags);
        m.attr(1, &cstr(self.table));
        m.attr(2, &0u32.to_be_bytes());
        self.push(m, format!("table inet {}", self.table));
    }

    fn flush(&mut self) {
        let mut m = self.msg(NFT_MSG_DELRULE, 0);
        m.attr(1, &cstr(self.table));
        self.push(m, format!("flush table inet {}", self.table));
    }

    fn chain(&mut self, name: &str, hook: Option<BasePolicy>) {
        let mut m = self.msg(NFT_MSG_NEWCHAIN, NLM_F_CREATE);
        m.attr(1, &cstr(self.table));
        m.attr(3, &cstr(name));
        if let Some(policy) = hook {
            m.attr(7, &cstr("filter"));
            let p = match policy {
                BasePolicy::Accept => NF_ACCEPT,
                BasePolicy::Drop => NF_DROP,
            };
            m.attr(5, &p.to_be_bytes());
            m.begin(4);
            m.attr(1, &1u32.to_be_bytes()); // NF_INET_LOCAL_IN
            m.attr(2, &0i32.to_be_bytes()); // priority filter
            m.end();
        }
        self.push(m, format!("chain {name}"));
    }

    fn set(&mut self, name: &str, d: &SetDecl) -> u32 {
        let id = self.next_id;
        self.next_id += 1;
        self.set_ids.insert(name.to_string(), id);
        let mut m = self.msg(NFT_MSG_NEWSET, NLM_F_CREATE);
        m.attr(1, &cstr(self.table));
        m.attr(2, &cstr(name));
        m.attr(3, &d.flags.to_be_bytes());
        m.attr(4, &d.key_type.to_be_bytes());
        m.attr(5, &d.key_len.to_be_bytes());
        if d.verdicts {
            m.attr(6, &NFT_DATA_VERDICT.to_be_bytes());
            m.attr(7, &0u32.to_be_bytes());
        }
        m.attr(10, &id.to_be_bytes());
        if let Some(size) = d.size {
            m.begin(9);
            m.attr(1, &size.to_be_bytes());
            m.end();
        }
        if let Some(t) = d.timeout_ms {
            m.attr(11, &t.to_be_bytes());
        }
        let mut ud = d.udata.clone();
        if let Some(c) = &d.comment {
            ud.extend(udata(&[(UDATA_SET_COMMENT, &cstr(c))]));
        }
        m.attr(13, &ud);
        self.push(m, format!("set {name}"));
        id
    }

    fn del_set(&mut self, name: &str) {
        let mut m = self.msg(NFT_MSG_DELSET, 0);
        m.attr(1, &cstr(self.table));
        m.attr(2, &cstr(name));
        self.push(m, format!("delete set {name}"));
    }

    /// The elements of `set` (declared in this batch), in as many messages as they need.
    fn elements(&mut self, set: &str, elems: Vec<Elem>) {
        let id = self.set_ids.get(set).copied();
        let mut rest = &elems[..];
        while !rest.is_empty() {
            let mut m = self.msg(NFT_MSG_NEWSETELEM, NLM_F_CREATE);
            m.buf
                .reserve((rest.len() * 48).min(MAX_ELEMENTS_BYTES + 1024));
            m.attr(NFTA_SET_ELEM_LIST_TABLE, &cstr(self.table));
            m.attr(NFTA_SET_ELEM_LIST_SET, &cstr(set));
            if let Some(id) = id {
                m.attr(NFTA_SET_ELEM_LIST_SET_ID, &id.to_be_bytes());
            }
            m.begin(NFTA_SET_ELEM_LIST_ELEMENTS);
            let start = m.buf.len();
            let mut used = 0;
            for e in rest {
                if m.buf.len() - start > MAX_ELEMENTS_BYTES {
                    break;
                }
                encode(&mut m, e);
                used += 1;
            }
            m.end();
            rest = &rest[used..];
            self.push(m, format!("the elements of set {set}"));
        }
    }

    /// An anonymous set or map of a rule, with its elements; returns its name and id.
    fn anonymous(&mut self, map: bool, d: SetDecl, elems: Vec<Elem>) -> (String, u32) {
        let name = if map { "__map%d" } else { "__set%d" };
        let d = SetDecl {
            flags: d.flags | NFT_SET_ANONYMOUS | NFT_SET_CONSTANT,
            size: Some(elems.len() as u32),
            ..d
        };
        let id = self.set(name, &d);
        self.elements(name, elems);
        (name.to_string(), id)
    }

    fn rule(&mut self, chain: &str, line: &Line) {
        let mut e = Exprs {
            m: Msg::new(0, 0, 0, 0, 0),
        };
        let comment = match line {
            Line::Vmap(entries, comment) => {
                let (d, key) = vmap_key(entries[0].0);
                let elems = entries
                    .iter()
                    .map(|(k, v)| Elem {
                        key: vmap_value(*k),
                        data: final_code(v).map(|(c, ch)| (c, ch.map(str::to_string))),
                        ..Elem::default()
                    })
                    .collect();
                let (name, id) = self.anonymous(true, d, elems);
                match key {
                    Selector::Meta(k) => e.meta(k),
                    Selector::Ct(k) => e.ct(k),
                }
                e.lookup(&name, Some(id), true);
                comment
            }
            Line::Rule(stmts, comment) => {
                self.statements(&mut e, stmts);
                comment
            }
        };
        let mut m = self.msg(NFT_MSG_NEWRULE, NLM_F_CREATE | NLM_F_APPEND);
        m.attr(1, &cstr(self.table));
        m.attr(2, &cstr(chain));
        m.begin(4);
        // The expressions were built in a scratch message: move their bytes over.
        m.buf.extend_from_slice(&e.m.buf[20..]);
        m.end();
        m.attr(7, &udata(&[(UDATA_RULE_COMMENT, &cstr(comment))]));
        self.push(m, format!("a rule of chain {chain} ({comment})"));
    }

    /// A lookup of the port in the register (loaded by the caller) in an anonymous set of
    /// `ranges` (`field`: 1 source port, 2 destination port), inverted when `inv`.
    fn port_lookup(
        &mut self,
        e: &mut Exprs,
        p: L4Proto,
        field: u32,
        ranges: &[pbxfw_core::PortRange],
        inv: bool,
    ) {
        let interval = ranges.iter().any(|r| r.first != r.last);
        let d = anon_decl(TYPE_INET_SERVICE, 2, p, field, interval);
        let elems = if interval {
            intervals(
                u16::MAX as u128,
                ranges
                    .iter()
                    .map(|r| (r.first as u128, r.last as u128, None)),
                |v| (v as u16).to_be_bytes().to_vec(),
            )
        } else {
            ranges
                .iter()
                .flat_map(|r| hash_elements(r.first.to_be_bytes().to_vec()))
                .collect()
        };
        let (name, id) = self.anonymous(false, d, elems);
        if inv {
            e.lookup_not(&name, Some(id));
        } else {
            e.lookup(&name, Some(id), false);
        }
    }

    fn statements(&mut self, e: &mut Exprs, stmts: &[Stmt]) {
        let mut cx = Context::default();
        let need_family = |e: &mut Exprs, cx: &mut Context, f: Family| {
            if cx.family.is_none() {
                e.meta(META_NFPROTO);
                e.cmp(CMP_EQ, &[nfproto(f)]);
            }
            cx.family = Some(f);
        };
        let need_proto = |e: &mut Exprs, cx: &mut Context, p: L4Proto| {
            match p {
                L4Proto::Icmp => need_family(e, cx, Family::Ipv4),
                L4Proto::Icmpv6 => need_family(e, cx, Family::Ipv6),
                L4Proto::Tcp | L4Proto::Udp => {}
            }
            if cx.proto.is_none() {
                e.meta(META_L4PROTO);
                e.cmp(CMP_EQ, &[proto_number(p)]);
            }
            cx.proto = Some(p);
        };
        let source = |e: &mut Exprs, cx: &mut Context, key: &SourceKey| {
            need_family(e, cx, key.family);
            let (offset, len) = match key.family {
                Family::Ipv4 => (12, 4),
                Family::Ipv6 => (8, 16),
            };
            e.payload(BASE_NETWORK, offset, len);
            if let Some(mask) = key.mask() {
                e.bitwise(&key_bytes(key.family, mask), &vec![0; len as usize]);
            }
        };
        let mut i = 0;
        while i < stmts.len() {
            match &stmts[i] {
                Stmt::Nfproto(f) => {
                    e.meta(META_NFPROTO);
                    e.cmp(CMP_EQ, &[nfproto(*f)]);
                    cx.family = Some(*f);
                }
                Stmt::Loopback => {
                    e.meta(META_IIF);
                    e.cmp(CMP_EQ, &1u32.to_ne_bytes());
                }
                Stmt::IifName(name) => {
                    e.meta(META_IIFNAME);
                    e.cmp(CMP_EQ, &ifname(name));
                }
                Stmt::Src(key, set) => {
                    source(e, &mut cx, key);
                    e.lookup(set, self.set_ids.get(set).copied(), false);
                }
                Stmt::NotSrc(key, set) => {
                    source(e, &mut cx, key);
                    e.lookup_not(set, self.set_ids.get(set).copied());
                }
                Stmt::L4proto(p) => {
                    e.meta(META_L4PROTO);
                    e.cmp(CMP_EQ, &[proto_number(*p)]);
                    cx.proto = Some(*p);
                }
                Stmt::Ports(p, dir, ports) => {
                    need_proto(e, &mut cx, *p);
                    let offset = match dir {
                        PortDir::Sport => 0,
                        PortDir::Dport => 2,
                    };
                    let single = |ps: &pbxfw_core::PortSet| match ps.ranges() {
                        [r] if r.first == r.last => Some(r.first),
                        _ => None,
                    };
                    // nft merges a single source port and the single destination port that
                    // follows it into one 4-byte load.
                    if let (PortDir::Sport, Some(sport), Some(Stmt::Ports(_, PortDir::Dport, d))) =
                        (dir, single(ports), stmts.get(i + 1))
                    {
                        if let Some(dport) = single(d) {
                            e.payload(BASE_TRANSPORT, 0, 4);
                            let mut v = sport.to_be_bytes().to_vec();
                            v.extend_from_slice(&dport.to_be_bytes());
                            e.cmp(CMP_EQ, &v);
                            i += 2;
                            continue;
                        }
                    }
                    match ports.ranges() {
                        [r] if r.first == r.last => {
                            e.payload(BASE_TRANSPORT, offset, 2);
                            e.cmp(CMP_EQ, &r.first.to_be_bytes());
                        }
                        [r] => {
                            e.payload(BASE_TRANSPORT, offset, 2);
                            e.cmp(CMP_GTE, &r.first.to_be_bytes());
                            e.cmp(CMP_LTE, &r.last.to_be_bytes());
                        }
                        ranges => {
                            let field = match dir {
                                PortDir::Sport => 1,
                                PortDir::Dport => 2,
                            };
                            e.payload(BASE_TRANSPORT, offset, 2);
                            self.port_lookup(e, *p, field, ranges, false);
                        }
                    }
                }
                // What nft makes of `udp dport != …`: an inverted comparison, an inverted
                // range, or an inverted lookup of an anonymous set.
                Stmt::NotDports(p, ports) => {
                    need_proto(e, &mut cx, *p);
                    e.payload(BASE_TRANSPORT, 2, 2);
                    match ports.ranges() {
                        [r] if r.first == r.last => e.cmp(CMP_NEQ, &r.first.to_be_bytes()),
                        [r] => e.range_neq(&r.first.to_be_bytes(), &r.last.to_be_bytes()),
                        ranges => match crate::stmt::as_singles(ports) {
                            Some(singles) => {
                                let singles: Vec<pbxfw_core::PortRange> = singles
                                    .into_iter()
                                    .map(pbxfw_core::PortRange::single)
                                    .collect();
                                self.port_lookup(e, *p, 2, &singles, true)
                            }
                            None => self.port_lookup(e, *p, 2, ranges, true),
                        },
                    }
                }
                Stmt::IcmpTypes(p, types) => {
                    need_proto(e, &mut cx, *p);
                    if types.len() == 1 {
                        e.payload(BASE_TRANSPORT, 0, 1);
                        e.cmp(CMP_EQ, &[*types.iter().next().unwrap()]);
                    } else {
                        let key_type = match p {
                            L4Proto::Icmpv6 => TYPE_ICMPV6_TYPE,
                            _ => TYPE_ICMP_TYPE,
                        };
                        let d = anon_decl(key_type, 1, *p, 1, false);
                        let elems = types.iter().flat_map(|t| hash_elements(vec![*t])).collect();
                        let (name, id) = self.anonymous(false, d, elems);
                        e.payload(BASE_TRANSPORT, 0, 1);
                        e.lookup(&name, Some(id), false);
                    }
                }
                Stmt::CtState(states) => {
                    let bits: u32 = states.iter().map(|s| ct_bit(*s)).sum();
                    e.ct(CT_STATE);
                    e.bitwise(&bits.to_ne_bytes(), &0u32.to_ne_bytes());
                    e.cmp(CMP_NEQ, &0u32.to_ne_bytes());
                }
                Stmt::CtMarkHas(bits) => {
                    e.ct(CT_MARK);
                    e.bitwise(&bits.to_ne_bytes(), &0u32.to_ne_bytes());
                    e.cmp(CMP_EQ, &bits.to_ne_bytes());
                }
                Stmt::CtReply => {
                    e.ct(CT_DIRECTION);
                    e.cmp(CMP_EQ, &[1]); // IP_CT_DIR_REPLY
                }
                Stmt::CtOriginal => {
                    e.ct(CT_DIRECTION);
                    e.cmp(CMP_EQ, &[0]); // IP_CT_DIR_ORIGINAL
                }
                Stmt::Payload(offset, bytes) => {
                    e.payload(BASE_INNER, (*offset / 8) as u32, bytes.len() as u32);
                    e.cmp(CMP_EQ, bytes);
                }
                Stmt::Data => {
                    e.payload(BASE_INNER, 0, 1);
                    e.bitwise(&[0], &[0]);
                    e.cmp(CMP_EQ, &[0]);
                }
                Stmt::Syn => {
                    need_proto(e, &mut cx, L4Proto::Tcp);
                    e.payload(BASE_TRANSPORT, 13, 1);
                    e.bitwise(&[0x17], &[0]); // fin | syn | rst | ack
                    e.cmp(CMP_EQ, &[0x02]);
                }
                Stmt::Meter {
                    set,
                    key,
                    rate,
                    burst,
                } => {
                    source(e, &mut cx, key);
                    let id = self.set_ids.get(set).copied();
                    e.expr("dynset", |m| {
                        m.attr(4, &REG_1.to_be_bytes());
                        m.attr(3, &1u32.to_be_bytes()); // update
                        m.attr(1, &cstr(set));
                        if let Some(id) = id {
                            m.attr(2, &id.to_be_bytes());
                        }
                        m.begin(7);
                        m.attr(1, &cstr("limit"));
                        m.begin(2);
                        Exprs::limit(m, *rate, *burst, true);
                        m.end();
                        m.end();
                    });
                }
                Stmt::Limit(rate, burst) => {
                    e.expr("limit", |m| Exprs::limit(m, *rate, *burst, false));
                }
                Stmt::Counter => e.expr("counter", |_| {}),
                Stmt::Update(set, key) => {
                    source(e, &mut cx, key);
                    let id = self.set_ids.get(set).copied();
                    e.expr("dynset", |m| {
                        m.attr(4, &REG_1.to_be_bytes());
                        m.attr(3, &1u32.to_be_bytes());
                        m.attr(1, &cstr(set));
                        if let Some(id) = id {
                            m.attr(2, &id.to_be_bytes());
                        }
                    });
                }
                Stmt::Notify(group) => e.expr("log", |m| {
                    m.attr(1, &group.to_be_bytes()); // NFTA_LOG_GROUP
                    m.attr(3, &crate::stmt::NOTIFY_SNAPLEN.to_be_bytes()); // NFTA_LOG_SNAPLEN
                }),
                Stmt::Mark(op) => {
                    let (mask, xor) = match op {
                        MarkOp::Set(bits) => (!bits, *bits),
                        MarkOp::Clear(bits) => (!bits, 0),
                    };
                    e.ct(CT_MARK);
                    e.bitwise(&mask.to_ne_bytes(), &xor.to_ne_bytes());
                    e.expr("ct", |m| {
                        m.attr(2, &CT_MARK.to_be_bytes());
                        m.attr(4, &REG_1.to_be_bytes());
                    });
                }
                Stmt::Final(f) => match f {
                    Final::Reject(Reject::TcpReset) => e.reject(1, 0),
                    // With the family known, nft answers in its ICMP (port unreachable: code
                    // 3, ICMPv6 4); without, in ICMPX, which the kernel translates.
                    Final::Reject(Reject::PortUnreachable) => match cx.family {
                        Some(Family::Ipv4) => e.reject(0, 3),
                        Some(Family::Ipv6) => e.reject(0, 4),
                        None => e.reject(2, 1),
                    },
                    Final::Log(prefix) => e.expr("log", |m| m.attr(2, &cstr(prefix))),
                    Final::SrcVmap(f, map) => {
                        source(
                            e,
                            &mut cx,
                            &SourceKey {
                                family: *f,
                                key_len: f.bits(),
                            },
                        );
                        e.lookup(map, self.set_ids.get(map).copied(), true);
                    }
                    Final::IifVmap(map) => {
                        e.meta(META_IIFNAME);
                        e.lookup(map, self.set_ids.get(map).copied(), true);
                    }
                    plain => {
                        let (code, chain) = final_code(plain).expect("a plain verdict");
                        e.verdict(code, chain);
                    }
                },
            }
            i += 1;
        }
    }
}

/// How a merged verdict map reads its key.
enum Selector {
    Meta(u32),
    Ct(u32),
}

fn vmap_key(k: VmapKey) -> (SetDecl, Selector) {
    let (key_type, key_len, sel) = match k {
        VmapKey::Family(_) => (TYPE_NFPROTO, 1, Selector::Meta(META_NFPROTO)),
        VmapKey::Proto(_) => (TYPE_INET_PROTOCOL, 1, Selector::Meta(META_L4PROTO)),
        VmapKey::Ct(_) => (TYPE_CT_STATE, 4, Selector::Ct(CT_STATE)),
    };
    let d = SetDecl {
        flags: NFT_SET_MAP,
        key_type,
        key_len,
        verdicts: true,
        udata: udata(&[
            (UDATA_SET_KEYBYTEORDER, &BYTEORDER_HOST.to_ne_bytes()),
            (UDATA_SET_DATABYTEORDER, &0u32.to_ne_bytes()),
            (
                UDATA_SET_DATA_TYPEOF,
                &udata(&[(0, &1u32.to_ne_bytes()), (1, &[])]),
            ),
            (UDATA_SET_DATA_INTERVAL, &0u32.to_ne_bytes()),
        ]),
        ..SetDecl::default()
    };
    (d, sel)
}

fn vmap_value(k: VmapKey) -> Vec<u8> {
    match k {
        VmapKey::Family(f) => vec![nfproto(f)],
        VmapKey::Proto(p) => vec![proto_number(p)],
        VmapKey::Ct(s) => ct_bit(s).to_ne_bytes().to_vec(),
    }
}

/// An anonymous set of a transport header field, with the user data nft gives it (the field
/// it was typed from, for `nft list`).
fn anon_decl(key_type: u32, key_len: u32, p: L4Proto, field: u32, interval: bool) -> SetDecl {
    let desc: u32 = match p {
        L4Proto::Icmp => 4,
        L4Proto::Udp => 6,
        L4Proto::Tcp => 8,
        L4Proto::Icmpv6 => 14,
    };
    let typeof_data = udata(&[(0, &desc.to_ne_bytes()), (1, &field.to_ne_bytes())]);
    let key_typeof = udata(&[(0, &7u32.to_ne_bytes()), (1, &typeof_data)]);
    let order = BYTEORDER_BIG.to_ne_bytes();
    let one = 1u32.to_ne_bytes();
    let mut items: Vec<(u8, &[u8])> = vec![(UDATA_SET_KEYBYTEORDER, &order)];
    if interval {
        items.push((UDATA_SET_MERGE_ELEMENTS, &one));
    }
    items.push((UDATA_SET_KEY_TYPEOF, &key_typeof));
    SetDecl {
        flags: if interval { NFT_SET_INTERVAL } else { 0 },
        key_type,
        key_len,
        udata: udata(&items),
        ..SetDecl::default()
    }
}

fn encode(m: &mut Msg, e: &Elem) {
    m.begin(NFTA_LIST_ELEM);
    if e.end {
        m.attr(
            NFTA_SET_ELEM_FLAGS,
            &NFT_SET_ELEM_INTERVAL_END.to_be_bytes(),
        );
    }
    m.begin(NFTA_SET_ELEM_KEY);
    m.attr(NFTA_DATA_VALUE, &e.key);
    m.end();
    if let Some((code, chain)) = &e.data {
        m.begin(NFTA_SET_ELEM_DATA);
        verdict_data(m, *code, chain.as_deref());
        m.end();
    }
    if let Some(t) = e.timeout_ms {
        m.attr(NFTA_SET_ELEM_TIMEOUT, &t.to_be_bytes());
    }
    if e.open {
        m.attr(
            NFTA_SET_ELEM_USERDATA,
            &udata(&[(
                UDATA_SET_ELEM_FLAGS,
                &SET_ELEM_F_INTERVAL_OPEN.to_ne_bytes(),
            )]),
        );
    }
    m.end();
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A new load is the reload without its flush and deletions: the same declarations (each
    /// set once, where the reload declares it last), the same elements and rules, in order.
    #[test]
    fn a_new_load_is_the_reload_without_its_deletions() {
        let rs = pbxfw_core::compile(
            &pbxfw_core::Policy::from_toml(pbxfw_core::DEFAULT_POLICY_TOML)
                .unwrap()
                .validate()
                .unwrap(),
        );
        let opts = Options::default();
        let whats =
            |m: Vec<(Vec<u8>, String)>| -> Vec<String> { m.into_iter().map(|(_, w)| w).collect() };
        let reload = whats(messages(&rs, &opts, &Default::default()).unwrap());
        let fresh = whats(new_load_messages(&rs, &opts, &Default::default()).unwrap());
        let removes = |w: &String| w.starts_with("delete ") || w.starts_with("flush ");
        assert!(reload.iter().any(removes));
        assert!(!fresh.iter().any(removes), "{fresh:?}");
        // The reload without its removals, each named set's declaration kept where it comes
        // last (the anonymous ones are declared once each, before their rule).
        let named = |w: &String| w.starts_with("set ") && !w.starts_with("set __");
        let kept: Vec<String> = reload
            .iter()
            .enumerate()
            .filter(|(i, w)| {
                let declared_again = named(w) && reload[i + 1..].contains(w);
                !(removes(w) || declared_again)
            })
            .map(|(_, w)| w.clone())
            .collect();
        assert_eq!(kept, fresh);
    }
}
