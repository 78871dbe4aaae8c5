//! SIP User-Agents that only attack tools send (SPEC 2.7: banned at once).

/// Substrings (compared case-insensitively) of the User-Agents of known SIP attack tools:
/// SIPVicious (`friendly-scanner`, `sipvicious`), sipcli, SIPScan/sip-scan, VaxSIPUserAgent
/// (used by mass scanners), sundayddr, iWar, sipsak in scanning use.
const ATTACK_TOOLS: &[&str] = &[
    "friendly-scanner",
    "sipvicious",
    "sipcli",
    "sip-scan",
    "sipscan",
    "vaxsipuseragent",
    "sundayddr",
    "iwar",
    "sipsak",
];

/// Whether a User-Agent belongs to a known attack tool.
pub fn is_attack_tool(user_agent: &str) -> bool {
    let ua = user_agent.to_ascii_lowercase();
    ATTACK_TOOLS.iter().any(|t| ua.contains(t))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tools_and_phones() {
        assert!(is_attack_tool("friendly-scanner"));
        assert!(is_attack_tool("VaxSIPUserAgent/3.1"));
        assert!(is_attack_tool("sipcli/v1.8"));
        assert!(!is_attack_tool("Yealink SIP-T46S 66.86.0.15"));
        assert!(!is_attack_tool("Grandstream GXP2170 1.0.11.3"));
    }
}
