//! SIP User-Agents that only attack tools send (docs/responsive.md: a source using one is banned at once).
//!
//! The list is the fingerprints seen across public configurations (Kamailio's default
//! `kamailio.cfg` drops `friendly|scanner|sipcli|sipvicious|VaxSIPUserAgent|pplsip`; community
//! iptables string rules and other projects' lists add the rest). It names *tools*, never SDKs
//! that real softphones are built on (PortSIP, Ozeki, SIPSorcery, pjsip, Linphone): a phone
//! must not be banned for its library. User-Agents are trivially forged, so this is a cheap
//! early signal, not a defence on its own.

/// One fingerprint: lower-case text, and whether it must stand as a word (not be glued to
/// letters or digits on either side), for short names that could occur inside another name.
struct Tool {
    text: &'static str,
    word: bool,
}

const fn sub(text: &'static str) -> Tool {
    Tool { text, word: false }
}

const fn word(text: &'static str) -> Tool {
    Tool { text, word: true }
}

/// Known attack tools, compared case-insensitively.
const ATTACK_TOOLS: &[Tool] = &[
    sub("friendly-scanner"), // SIPVicious svmap/svwar/svcrack default
    sub("sipvicious"),       // SIPVicious, SIPVicious PRO
    word("sipcli"),          // sipcli/v1.8; `word` so "MySIPClient" is not hit
    sub("sip-scan"),
    sub("sipscan"), // also SIPScan
    sub("vaxsipuseragent"),
    sub("vaxipuseragent"),
    sub("sundayddr"),
    word("iwar"), // iWar war dialer
    word("sipsak"),
    sub("pplsip"),
    sub("siparmyknife"),
    word("sivus"),
    sub("nsauditor"),
    sub("nmap nse"),
];

/// The fingerprints, lower case, for documentation and diagnostics.
pub fn attack_tools() -> impl Iterator<Item = &'static str> {
    ATTACK_TOOLS.iter().map(|t| t.text)
}

/// Whether a User-Agent belongs to a known attack tool (case-insensitive; no allocation).
pub fn is_attack_tool(user_agent: &str) -> bool {
    // Lower-case once (tool names sit at the start of the header; 256 bytes is plenty), then
    // let the standard substring search do the work for every pattern.
    let mut buf = [0u8; 256];
    let n = user_agent.len().min(buf.len());
    for (d, s) in buf.iter_mut().zip(user_agent.as_bytes()) {
        *d = s.to_ascii_lowercase();
    }
    let ua = &buf[..n];
    ATTACK_TOOLS.iter().any(|t| contains(ua, t))
}

/// Whether `ua` (lower-case) contains the tool's text, as a whole word for word patterns.
fn contains(ua: &[u8], tool: &Tool) -> bool {
    let pat = tool.text.as_bytes();
    if pat.len() > ua.len() {
        return false;
    }
    // Cheap pre-check on the first byte before comparing windows.
    let first = pat[0];
    (0..=ua.len() - pat.len()).any(|i| {
        ua[i] == first
            && &ua[i..i + pat.len()] == pat
            && (!tool.word
                || (!ua
                    .get(i.wrapping_sub(1))
                    .is_some_and(u8::is_ascii_alphanumeric)
                    && !ua.get(i + pat.len()).is_some_and(u8::is_ascii_alphanumeric)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tools() {
        for ua in [
            "friendly-scanner",
            "Friendly-Scanner 0.2",
            "sipvicious",
            "SIPVicious PRO",
            "sipcli/v1.8",
            "VaxSIPUserAgent/3.1",
            "VaxIPUserAgent/3.0",
            "sip-scan",
            "SIPScan",
            "sundayddr",
            "iWar",
            "sipsak 0.9.6",
            "pplsip",
            "SIPArmyKnife",
            "Nsauditor VoIP",
            "Nmap NSE",
        ] {
            assert!(is_attack_tool(ua), "{ua}");
        }
    }

    #[test]
    fn phones_and_sdks() {
        for ua in [
            "",
            "Yealink SIP-T46S 66.86.0.15",
            "Grandstream GXP2170 1.0.11.3",
            "Zoiper rv2.10.20.2",
            "MicroSIP/3.21.3",
            "Linphone/5.2.0 (belle-sip/5.2.0)",
            "PortSIP VoIP SDK 19.2",
            "Ozeki VoIP SIP SDK",
            "sipsorcery_v6.0.12",
            "Cisco-SIPGateway/IOS-15.x",
            "MySIPClient 2.1",
            "Kiwari softphone",
            "Asterisk PBX 20.5.0",
            "FPBX-16.0.33(18.20.0)",
            "PolycomVVX-VVX_411-UA/6.4.3.5018",
        ] {
            assert!(!is_attack_tool(ua), "{ua}");
        }
    }

    #[test]
    fn non_ascii_does_not_panic() {
        assert!(!is_attack_tool("Ünïcødé ☎"));
        assert!(is_attack_tool("☎friendly-scanner☎"));
        assert!(is_attack_tool("☎sipcli☎"));
    }
}
