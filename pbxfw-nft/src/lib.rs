//! pbxfw-nft: lowers the pbxfw rule IR to nftables.
//!
//! [`lower`] turns a [`Ruleset`] into one script for `nft -f` that owns only `table inet pbxfw`
//! (docs/safety.md). [`Kernel`] loads the same transaction into the current network namespace
//! as one netlink batch built in process ([`netlink::ruleset`], docs/design.md "The netlink
//! load"; the script through `nft -f` is the fallback), verifies it, reports status and removes
//! it; [`netlink`] adds and removes set elements without a reload.
//!
//! ```
//! use pbxfw_core::{compile, Policy};
//! let policy = Policy::from_toml("[interfaces]\neth1 = \"local\"\n")?.validate()?;
//! let script = pbxfw_nft::lower(&compile(&policy), &pbxfw_nft::Options::default())?;
//! assert!(script.text.contains("table inet pbxfw {"));
//! assert!(script.text.contains(r#"iifname vmap @zone_iif comment "zone: interfaces""#));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # The reload idiom
//! `nft -f` is additive, and replacing the whole table would empty the dynamic sets (bans,
//! registrations). The script (and the netlink batch, message for message), one transaction,
//! therefore: creates the table if absent and
//! flushes its rules (sets keep their elements); declares every set, map and chain (creating
//! the missing ones; dynamic sets are never touched again, so their elements keep their
//! remaining timeouts); deletes the static sets and maps and declares them again with their
//! elements (replaced exactly, on nft's fast path: adding 100k elements to an existing interval
//! set would make nft read the old ones back first); then adds the rules.
//!
//! # Input safety
//! Every string that reaches the script (comments, interface names, log prefixes) is either
//! validated or sanitised so that it cannot close its quotes: see [`sanitize_comment`].
#![deny(unsafe_code)] // allowed in `netlink` only, for the socket system calls
#![deny(missing_docs)]

pub mod kernel;
pub mod netlink;
mod stmt;

use std::fmt::Write;

pub use kernel::{ApplyOptions, Kernel, KernelError, Loader, Status};

use pbxfw_core::Family;
use pbxfw_core::{verify_ir as verify, Map, Match, Ruleset, SetKind, VerifyError};
use stmt::{hook_line, iface};

/// The name this backend reports (`Unsupported { backend, .. }`, status).
pub const BACKEND: &str = "nft";
/// The table pbxfw owns.
pub const TABLE: &str = "pbxfw";
/// The chain a `reject` that may see TCP goes to: a reset for TCP, port-unreachable otherwise.
pub const REJECT_CHAIN: &str = "reject_packet";
/// A one-element set holding the loaded ruleset's fingerprint (as an IPv6 address whose first
/// 64 bits are the fingerprint): it is replaced on every load (table and chain comments are not),
/// and listing one small set is cheap, whereas any other listing makes `nft` read every element
/// of every set (seconds at 100k blacklist entries).
pub const FINGERPRINT_SET: &str = "fingerprint";

/// The fingerprint (16 hex digits) as the element of [`FINGERPRINT_SET`].
pub fn fingerprint_element(fp: &str) -> String {
    let hex: String = fp
        .chars()
        .filter(char::is_ascii_hexdigit)
        .take(16)
        .collect();
    let hex = format!("{hex:0<16}");
    format!(
        "{}:{}:{}:{}::",
        &hex[0..4],
        &hex[4..8],
        &hex[8..12],
        &hex[12..16]
    )
}

/// The fingerprint back from an element of [`FINGERPRINT_SET`] as nft prints it.
pub fn fingerprint_from_element(el: &str) -> Option<String> {
    let addr: std::net::Ipv6Addr = el.parse().ok()?;
    let seg = addr.segments();
    Some(format!(
        "{:04x}{:04x}{:04x}{:04x}",
        seg[0], seg[1], seg[2], seg[3]
    ))
}

/// How to lower.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// The table name (tests use their own; production uses [`TABLE`]).
    pub table: String,
    /// Add a `counter` to every rule (for `status` and debugging).
    pub counters: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            table: TABLE.into(),
            counters: false,
        }
    }
}

/// Why a ruleset could not be lowered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LowerError {
    /// The IR broke an invariant: a bug in whatever built it.
    #[error("the ruleset is not valid IR")]
    Invalid(#[source] VerifyError),
    /// Something nftables cannot express.
    #[error("backend {backend} does not support {feature}")]
    Unsupported {
        /// Always `nft` here.
        backend: &'static str,
        /// What is missing.
        feature: String,
    },
}

/// An nft script and the fingerprint of the IR it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Script {
    /// Text for `nft -f`.
    pub text: String,
    /// [`Ruleset::fingerprint`] of the source IR; also stored as the table's comment.
    pub fingerprint: String,
}

/// Make a string safe inside an nft double-quoted string: quotes and backslashes become `'`
/// and `/`, control characters are dropped, and the result is cut to `max` bytes on a
/// character boundary.
pub fn sanitize_comment(s: &str, max: usize) -> String {
    let mut out = String::with_capacity(s.len().min(max));
    for c in s.chars() {
        let c = match c {
            '"' => '\'',
            '\\' => '/',
            c if c.is_control() => continue,
            c => c,
        };
        if out.len() + c.len_utf8() > max {
            break;
        }
        out.push(c);
    }
    out
}

fn addr_type(f: Family) -> &'static str {
    match f {
        Family::Ipv4 => "ipv4_addr",
        Family::Ipv6 => "ipv6_addr",
    }
}

/// The checks both load paths make before lowering: the IR is valid and names none of the
/// backend's own objects.
pub(crate) fn check(rs: &Ruleset) -> Result<(), LowerError> {
    verify(rs).map_err(LowerError::Invalid)?;
    for reserved in [FINGERPRINT_SET, REJECT_CHAIN] {
        if rs.chains.contains_key(reserved)
            || rs.sets.contains_key(reserved)
            || rs.maps.contains_key(reserved)
        {
            return Err(LowerError::Unsupported {
                backend: BACKEND,
                feature: format!("a chain named {reserved} (reserved)"),
            });
        }
    }
    Ok(())
}

/// The size a static set of addresses is declared with: its elements and room for a quarter
/// more (at least 1024), which the edit path's additions use before a whole reload sizes it
/// anew. The kernel builds the set's hash table for this size at once instead of growing it
/// while 100,000 elements go in (a third of the load's time).
pub(crate) fn hash_set_size(elements: usize) -> u32 {
    let n = elements.min(u32::MAX as usize / 2) as u32;
    (n + n / 4).max(1024)
}

/// Sets the packet path writes (meters, sliding bans): they need nft's `dynamic` flag.
pub(crate) fn packet_path_sets(rs: &Ruleset) -> std::collections::BTreeSet<&str> {
    rs.chains
        .values()
        .flat_map(|c| &c.rules)
        .flat_map(|r| {
            let meters = r.matches.iter().filter_map(|m| match m {
                Match::Meter { set, .. } => Some(set.as_str()),
                _ => None,
            });
            meters.chain(r.update.as_deref())
        })
        .collect()
}

/// The chains in the order both load paths declare them: the base chain first.
pub(crate) fn ordered_chains(rs: &Ruleset) -> Vec<(&String, &pbxfw_core::Chain)> {
    let base = rs.chains.get_key_value(pbxfw_core::INPUT);
    let others = rs
        .chains
        .iter()
        .filter(|(n, c)| c.hook.is_none() && *n != pbxfw_core::INPUT);
    base.into_iter().chain(others).collect()
}

/// Lower a ruleset to an nft script. The IR is verified first.
pub fn lower(rs: &Ruleset, opts: &Options) -> Result<Script, LowerError> {
    check(rs)?;
    let t = &opts.table;
    let fingerprint = rs.fingerprint();
    let packet_path_sets = packet_path_sets(rs);
    let set_header = |out: &mut String, name: &str, set: &pbxfw_core::Set| {
        let _ = writeln!(out, "\n\tset {name} {{");
        let _ = writeln!(out, "\t\ttype {}", addr_type(set.family));
        match &set.kind {
            // A set of addresses is a hash set: O(1) lookups at any size, sized up front.
            SetKind::Static(s) if s.is_hosts() => {
                let _ = writeln!(out, "\t\tsize {}", hash_set_size(s.elements().len()));
            }
            SetKind::Static(_) => {
                let _ = writeln!(out, "\t\tflags interval");
            }
            SetKind::Dynamic(d) => {
                // Sets the packet path writes (meters, sliding bans) need the dynamic flag;
                // the others are only written by pbxfw.
                let flags = if packet_path_sets.contains(name) {
                    "dynamic, timeout"
                } else if d.interval {
                    "interval, timeout"
                } else {
                    "timeout"
                };
                let _ = writeln!(out, "\t\tflags {flags}");
                if let Some(secs) = d.timeout {
                    let _ = writeln!(out, "\t\ttimeout {secs}s");
                }
                let _ = writeln!(out, "\t\tsize {}", d.size);
            }
        }
        let _ = writeln!(
            out,
            "\t\tcomment \"{}\"",
            sanitize_comment(&set.comment, 100)
        );
    };
    let map_header = |out: &mut String, name: &str, map: &Map| {
        let key = match map {
            Map::Src(m) => format!("{} : verdict;\n\t\tflags interval", addr_type(m.family())),
            Map::Iif(_) => "ifname : verdict".to_string(),
        };
        let _ = writeln!(out, "\n\tmap {name} {{\n\t\ttype {key}");
    };
    let chains = ordered_chains(rs);

    let mut out = String::new();
    let _ = writeln!(out, "#!/usr/sbin/nft -f");
    let _ = writeln!(out, "# generated by pbxfw; fingerprint {fingerprint}");
    let _ = writeln!(out, "table inet {t}");
    let _ = writeln!(out, "flush table inet {t}");
    // 1. Declare everything, creating what is missing: sets (dynamic ones keep their elements),
    //    maps, and the chains the maps' verdicts name.
    let _ = writeln!(out, "table inet {t} {{");
    let _ = writeln!(
        out,
        "\n\tset {FINGERPRINT_SET} {{\n\t\ttype ipv6_addr\n\t}}"
    );
    for (name, set) in &rs.sets {
        set_header(&mut out, name, set);
        let _ = writeln!(out, "\t}}");
    }
    for (name, map) in &rs.maps {
        map_header(&mut out, name, map);
        let _ = writeln!(out, "\t}}");
    }
    let _ = writeln!(out, "\n\tchain {REJECT_CHAIN} {{\n\t}}");
    for (name, chain) in &chains {
        // A chain cannot become a base chain later: the hook is declared with it.
        let header = chain.hook.map(hook_line).unwrap_or_default();
        let _ = writeln!(out, "\n\tchain {name} {{\n{header}\t}}");
    }
    let _ = writeln!(out, "}}");
    // 2. Static sets and maps are deleted and declared again with their elements: replaced
    //    exactly, on the fast path (adding 100k elements to an existing interval set makes nft
    //    read the old ones back first).
    let _ = writeln!(out, "delete set inet {t} {FINGERPRINT_SET}");
    for (name, set) in &rs.sets {
        if matches!(set.kind, SetKind::Static(_)) {
            let _ = writeln!(out, "delete set inet {t} {name}");
        }
    }
    for name in rs.maps.keys() {
        let _ = writeln!(out, "delete map inet {t} {name}");
    }
    // 3. The new contents and the rules.
    let _ = writeln!(out, "table inet {t} {{");
    let _ = writeln!(
        out,
        "\n\tset {FINGERPRINT_SET} {{\n\t\ttype ipv6_addr\n\t\tcomment \"the loaded ruleset's fingerprint\"\n\t\telements = {{ {} }}\n\t}}",
        fingerprint_element(&fingerprint)
    );
    for (name, set) in &rs.sets {
        let SetKind::Static(s) = &set.kind else {
            continue;
        };
        set_header(&mut out, name, set);
        if !s.elements().is_empty() {
            out.push_str("\t\telements = { ");
            for (i, (p, _)) in s.elements().iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                let _ = write!(out, "{p}");
            }
            out.push_str(" }\n");
        }
        let _ = writeln!(out, "\t}}");
    }
    for (name, map) in &rs.maps {
        map_header(&mut out, name, map);
        let entries: Vec<String> = match map {
            Map::Src(m) => m
                .entries()
                .iter()
                .map(|(r, c)| format!("{r} : goto {c}"))
                .collect(),
            Map::Iif(m) => m
                .iter()
                .map(|(i, c)| Ok(format!("{} : goto {c}", iface(i)?)))
                .collect::<Result<_, LowerError>>()?,
        };
        if !entries.is_empty() {
            let _ = writeln!(out, "\t\telements = {{ {} }}", entries.join(", "));
        }
        let _ = writeln!(out, "\t}}");
    }
    let _ = writeln!(out, "\n\tchain {REJECT_CHAIN} {{");
    for line in stmt::reject_chain() {
        let _ = writeln!(out, "\t\t{}", line.text());
    }
    let _ = writeln!(out, "\t}}");
    for (name, chain) in &chains {
        let _ = writeln!(out, "\n\tchain {name} {{");
        if let Some(policy) = chain.hook {
            out.push_str(&hook_line(policy));
        }
        for line in stmt::chain_lines(rs, &chain.rules, opts)? {
            let _ = writeln!(out, "\t\t{}", line.text());
        }
        let _ = writeln!(out, "\t}}");
    }
    let _ = writeln!(out, "}}");
    Ok(Script {
        text: out,
        fingerprint,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_comments_cannot_escape() {
        let s = sanitize_comment("a\" ; flush ruleset ; \\\n\"", 128);
        assert!(!s.contains('"') && !s.contains('\\') && !s.contains('\n'));
        assert_eq!(sanitize_comment("ééé", 3), "é");
    }

    #[test]
    fn hostile_interface_is_refused() {
        assert!(iface("eth0\" accept").is_err());
        assert_eq!(iface("eth0.100").unwrap(), "\"eth0.100\"");
    }
}
