//! Text from clients (paths, user agents, user ids) made safe to show: in route templates,
//! terminals, log lines and dashboards. Pure; no I/O.

/// Control characters from stored data (paths, user agents, user ids) must not drive the
/// terminal, and bidirectional overrides must not reorder what is shown.
pub fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}') { '?' } else { c })
        .collect()
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
