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
/// writes them; the access log's property test compares the two).
pub fn push_json_string(out: &mut String, s: &str) {
    use std::fmt::Write;
    out.push('"');
    let mut start = 0;
    for (i, c) in s.char_indices() {
        let esc = match c {
            '"' => "\\\"",
            '\\' => "\\\\",
            '\n' => "\\n",
            '\r' => "\\r",
            '\t' => "\\t",
            '\u{8}' => "\\b",
            '\u{c}' => "\\f",
            c if (c as u32) < 0x20 => "",
            _ => continue,
        };
        out.push_str(&s[start..i]);
        if esc.is_empty() {
            let _ = write!(out, "\\u{:04x}", c as u32);
        } else {
            out.push_str(esc);
        }
        start = i + c.len_utf8();
    }
    out.push_str(&s[start..]);
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_and_bidi_characters_are_replaced() {
        assert_eq!(sanitize("a\u{202e}b\x1b]8;;x\x07"), "a?b?]8;;x?");
        assert_eq!(sanitize("/caf\u{e9}/\u{2066}x"), "/caf\u{e9}/?x");
    }
}
