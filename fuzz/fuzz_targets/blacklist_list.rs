//! A blacklist list file's text (`blacklist.lists`, docs/policy.md "List files") validated with
//! a policy that names it: never a panic, and every diagnostic one of the list's two messages
//! with line numbers and counts only: no line is quoted back (a list path may name any file).
#![no_main]

use libfuzzer_sys::fuzz_target;

const POLICY: &str = "[blacklist]\nlists = [\"/etc/pbxfw/fuzz.list\"]\n";
const BAD: &str = " not an address or CIDR, skipped (a /0 is neither: it would drop every packet)";
const REPEAT: &str = " line(s) repeat entries of the blacklist already listed";

fn numbers(s: &str) -> bool {
    s.split(", ").flat_map(|p| p.split(" and ")).all(|w| {
        w == "more"
            || w.split(' ')
                .all(|n| n == "more" || (!n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())))
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut p = pbxfw_core::Policy::from_toml(POLICY).expect("the policy parses");
    p.attach_list("/etc/pbxfw/fuzz.list", text.to_string());
    let diags = match p.validate() {
        Ok(v) => v.warnings,
        Err(d) => d.iter().cloned().collect(),
    };
    for d in diags {
        let shown = d.to_string();
        if let Some(rest) = shown.strip_prefix("warning: blacklist.lists[0]: line") {
            let rest = rest.strip_prefix('s').unwrap_or(rest).trim_start();
            let middle = rest
                .strip_suffix(&format!(" is{BAD}"))
                .or_else(|| rest.strip_suffix(&format!(" are{BAD}")))
                .unwrap_or_else(|| panic!("unexpected {shown:?}"));
            assert!(numbers(middle), "{shown:?}");
        } else if let Some(rest) = shown.strip_prefix("warning: blacklist.lists[0]: ") {
            let n = rest
                .strip_suffix(REPEAT)
                .unwrap_or_else(|| panic!("unexpected {shown:?}"));
            assert!(n.bytes().all(|b| b.is_ascii_digit()), "{shown:?}");
        } else {
            panic!("unexpected {shown:?}");
        }
    }
});
