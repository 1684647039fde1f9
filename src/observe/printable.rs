//! Text from clients (paths, user agents, user ids) made safe to show: in route templates,
//! terminals, log lines and dashboards; and JSON strings written without building a value.
//! Pure; no I/O.

/// Control characters from stored data (paths, user agents, user ids) must not drive the
/// terminal, and bidirectional overrides must not reorder what is shown.
pub fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}') { '?' } else { c })
        .collect()
}

/// Appends `s` as a JSON string (`"…"` with JSON's escapes, byte for byte as `serde_json`
/// writes them; the access log's property test compares the two). It scans bytes: every byte
/// that needs an escape is ASCII, so UTF-8 sequences pass through untouched.
pub fn push_json_string(out: &mut String, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push('"');
    let mut start = 0;
    for (i, &b) in s.as_bytes().iter().enumerate() {
        let esc = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x08 => "\\b",
            0x0c => "\\f",
            0..=0x1f => "",
            _ => continue,
        };
        out.push_str(&s[start..i]);
        if esc.is_empty() {
            out.push_str("\\u00");
            out.push(HEX[(b >> 4) as usize] as char);
            out.push(HEX[(b & 15) as usize] as char);
        } else {
            out.push_str(esc);
        }
        start = i + 1;
    }
    out.push_str(&s[start..]);
    out.push('"');
}

/// Appends an address as `Display` writes it (`81.2.69.7`, `2001:db8::1`), IPv4 without the
/// formatting machinery (it is written for every request: `X-Forwarded-For`, the access log).
pub fn push_ip(out: &mut String, ip: std::net::IpAddr) {
    match ip {
        std::net::IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push('.');
                }
                if octet >= 100 {
                    out.push((b'0' + octet / 100) as char);
                }
                if octet >= 10 {
                    out.push((b'0' + octet / 10 % 10) as char);
                }
                out.push((b'0' + octet % 10) as char);
            }
        }
        std::net::IpAddr::V6(v6) => {
            use std::fmt::Write;
            let _ = write!(out, "{v6}");
        }
    }
}

/// [`push_ip`] into a new string.
pub fn ip_text(ip: std::net::IpAddr) -> String {
    let mut s = String::with_capacity(15);
    push_ip(&mut s, ip);
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    use proptest::prelude::*;

    proptest! {
        #[test]
        fn json_strings_are_serde_jsons(s in "\\PC{0,30}|[\\x00-\\x20\"\\\\\\u{7f}-\\u{a0}é€😀]{0,30}") {
            let mut out = String::new();
            push_json_string(&mut out, &s);
            prop_assert_eq!(out, serde_json::to_string(&s).unwrap());
        }

        #[test]
        fn addresses_are_written_as_display_writes_them(a in any::<[u8; 4]>(), b in any::<[u16; 8]>()) {
            let v4 = std::net::IpAddr::from(a);
            let v6 = std::net::IpAddr::from(b);
            prop_assert_eq!(ip_text(v4), v4.to_string());
            prop_assert_eq!(ip_text(v6), v6.to_string());
        }
    }

    #[test]
    fn control_and_bidi_characters_are_replaced() {
        assert_eq!(sanitize("a\u{202e}b\x1b]8;;x\x07"), "a?b?]8;;x?");
        assert_eq!(sanitize("/caf\u{e9}/\u{2066}x"), "/caf\u{e9}/?x");
    }
}
