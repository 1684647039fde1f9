//! Where a session came from: the referrer's domain (never the URL) and the `utm_source`,
//! `utm_medium` and `utm_campaign` tags of its landing page's query string. Everything here is
//! written by clients, so it is parsed strictly, cleaned (lowercase domains, printable text,
//! length limits) and capped per day ([`AcquisitionCaps`]: the first N distinct values of a
//! dimension per UTC day, the rest as [`keys::OTHER`]). Pure; no I/O.

use crate::capture::daily_cap::DailyCap;
use crate::store::keys;

/// Longest domain kept (the DNS limit).
pub const MAX_DOMAIN: usize = 253;

/// Longest UTM value kept, in characters (longer ones are cut).
pub const MAX_TAG: usize = 100;

/// A landing page view's source: the referrer domain or [`keys::DIRECT`], and the UTM tags
/// (empty when absent). Each value is clean: see [`referrer_domain`] and [`clean_tag`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Source {
    pub referrer: String,
    pub utm_source: String,
    pub utm_medium: String,
    pub utm_campaign: String,
}

impl Source {
    /// The values in [`keys::ACQUISITION_DIMENSIONS`] order.
    pub fn values(&self) -> [&str; 4] {
        [&self.referrer, &self.utm_source, &self.utm_medium, &self.utm_campaign]
    }

    fn values_mut(&mut self) -> [&mut String; 4] {
        [&mut self.referrer, &mut self.utm_source, &mut self.utm_medium, &mut self.utm_campaign]
    }
}

/// The source of a page view: `referrer` (the `Referer` header as sent), `host` (the request's
/// `Host`, to drop same-site referrers) and `query` (its query string).
pub fn source(referrer: Option<&str>, host: Option<&str>, query: Option<&str>) -> Source {
    let referrer = referrer.and_then(|r| referrer_domain(r, host)).unwrap_or_else(|| keys::DIRECT.to_owned());
    let mut s = Source { referrer, ..Source::default() };
    if let Some(q) = query {
        for (k, v) in form_urlencoded::parse(q.as_bytes()) {
            let slot = match k.as_ref() {
                "utm_source" => &mut s.utm_source,
                "utm_medium" => &mut s.utm_medium,
                "utm_campaign" => &mut s.utm_campaign,
                _ => continue,
            };
            // The first occurrence wins.
            if slot.is_empty() {
                *slot = clean_tag(&v);
            }
        }
    }
    s
}

/// The host of an absolute `http`/`https` URL, lowercased, without userinfo, port or trailing
/// dot; `None` for anything else (a relative or malformed URL, another scheme, a host with
/// characters no domain or address has) and for a referrer on the request's own host.
pub fn referrer_domain(referrer: &str, host: Option<&str>) -> Option<String> {
    let r = referrer.trim();
    let (scheme, rest) = r.split_once("://")?;
    if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
        return None;
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let domain = hostname(hostport)?;
    if host.and_then(hostname).is_some_and(|h| h == domain) {
        return None;
    }
    Some(domain)
}

/// `example.COM:8080` → `example.com`; `[2001:db8::1]:443` → `[2001:db8::1]`. `None` unless
/// what remains is a plausible domain or address.
fn hostname(hostport: &str) -> Option<String> {
    let h = if hostport.starts_with('[') {
        let end = hostport.find(']')?;
        let (addr, after) = hostport.split_at(end + 1);
        if !(after.is_empty() || after.strip_prefix(':').is_some_and(|p| p.bytes().all(|b| b.is_ascii_digit()))) {
            return None;
        }
        if !addr[1..addr.len() - 1].bytes().all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.') {
            return None;
        }
        addr
    } else {
        match hostport.rsplit_once(':') {
            Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
            Some(_) => return None,
            None => hostport,
        }
    };
    let h = h.strip_suffix('.').unwrap_or(h).to_ascii_lowercase();
    let plausible = !h.is_empty()
        && h.len() <= MAX_DOMAIN
        && (h.starts_with('[') || h.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'_'))
        && !h.starts_with('.')
        && !h.contains("..");
    plausible.then_some(h)
}

/// A UTM value as stored: control and other non-printable characters dropped, surrounding
/// white space trimmed, inner runs of white space made one space, at most [`MAX_TAG`] characters.
pub fn clean_tag(v: &str) -> String {
    let mut out = String::new();
    let mut space = false;
    for c in v.chars() {
        if c.is_whitespace() {
            space = !out.is_empty();
            continue;
        }
        if c.is_control() || is_invisible(c) {
            continue;
        }
        if out.chars().count() + usize::from(space) >= MAX_TAG {
            break;
        }
        if space {
            out.push(' ');
            space = false;
        }
        out.push(c);
    }
    out
}

/// Format characters that print as nothing (bidi overrides, zero-width joiners, BOM).
fn is_invisible(c: char) -> bool {
    matches!(c, '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2069}' | '\u{FEFF}' | '\u{FFF9}'..='\u{FFFB}')
}

/// The first `max` distinct values of each dimension per UTC day, per process; later new ones
/// become [`keys::OTHER`]. So a day's sorted set of a dimension holds at most `max` + 1 members
/// per process, whatever clients send.
#[derive(Debug)]
pub struct AcquisitionCaps {
    dims: [DailyCap; 4],
}

impl AcquisitionCaps {
    pub fn new(max: usize) -> Self {
        Self { dims: std::array::from_fn(|_| DailyCap::new(max)) }
    }

    /// Replaces the values of `s` (seen at `ts_ms`) that the day no longer admits.
    pub fn cap(&mut self, ts_ms: i64, s: &mut Source) {
        for (cap, v) in self.dims.iter_mut().zip(s.values_mut()) {
            cap.roll(ts_ms);
            if !v.is_empty() && !cap.admit(v) {
                keys::OTHER.clone_into(v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn referrer_domains() {
        let d = |r: &str| referrer_domain(r, Some("shop.example:8080"));
        assert_eq!(d("https://www.Google.COM/search?q=secret"), Some("www.google.com".into()));
        assert_eq!(d("http://user:pw@news.example.org:80/a#b"), Some("news.example.org".into()));
        assert_eq!(d("https://example.net."), Some("example.net".into()));
        assert_eq!(d("https://[2001:DB8::1]:443/x"), Some("[2001:db8::1]".into()));
        assert_eq!(d("https://shop.example/cart"), None, "same site");
        assert_eq!(d("HTTPS://SHOP.EXAMPLE:443/cart"), None, "same site, another port");
        for bad in [
            "",
            "/relative",
            "android-app://com.x",
            "javascript:alert(1)",
            "https://",
            "https://a b.com/",
            "https://é.com/",
            "https://a..b/",
            "https://x.com:http/",
        ] {
            assert_eq!(d(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn sources() {
        let s =
            source(Some("https://t.co/abc"), Some("app.example"), Some("utm_source=Twitter&utm_medium=social&utm_campaign=%20Black%0AFriday%20&utm_source=x"));
        assert_eq!(s, Source { referrer: "t.co".into(), utm_source: "Twitter".into(), utm_medium: "social".into(), utm_campaign: "Black Friday".into() });
        assert_eq!(source(None, None, None).values(), [keys::DIRECT, "", "", ""]);
        assert_eq!(clean_tag(&"x".repeat(500)).len(), MAX_TAG);
        assert_eq!(clean_tag("a\u{202E}b\u{0}c"), "abc");
    }

    #[test]
    fn caps_admit_the_first_n_values_per_day() {
        let mut caps = AcquisitionCaps::new(2);
        let day = 1_796_043_900_000;
        let mut seen = Vec::new();
        for i in 0..5 {
            let mut s = Source { referrer: format!("r{i}.example"), utm_campaign: format!("c{i}"), ..Source::default() };
            caps.cap(day, &mut s);
            seen.push((s.referrer, s.utm_campaign));
        }
        assert_eq!(seen[1], ("r1.example".into(), "c1".into()));
        assert_eq!(seen[2], (keys::OTHER.into(), keys::OTHER.into()));
        let mut next = Source { referrer: "r4.example".into(), ..Source::default() };
        caps.cap(day + 86_400_000, &mut next);
        assert_eq!(next.referrer, "r4.example", "a new day admits new values");
    }

    proptest! {
        /// Whatever a client sends as `Referer`, `Host` and query string: no panic, and what is
        /// kept is short, printable, lowercase for domains, and never carries a path or query.
        #[test]
        fn parsing_untrusted_input_keeps_only_clean_bounded_values(referrer in ".{0,300}", host in ".{0,60}", query in ".{0,400}", domain in "[a-zA-Z0-9.-]{1,40}", path in "[ -~]{0,40}") {
            for s in [source(Some(&referrer), Some(&host), Some(&query)), source(Some(&format!("https://{domain}/{path}")), Some(&host), Some(&query))] {
                let r = &s.referrer;
                prop_assert!(r == keys::DIRECT || (r.len() <= MAX_DOMAIN && !r.contains('/') && !r.contains('?') && !r.contains('@') && *r == r.to_ascii_lowercase()));
                for tag in [&s.utm_source, &s.utm_medium, &s.utm_campaign] {
                    prop_assert!(tag.chars().count() <= MAX_TAG);
                    prop_assert!(!tag.chars().any(|c| c.is_control() || is_invisible(c)));
                    prop_assert_eq!(tag.trim(), tag.as_str());
                }
            }
            // A referrer on the request's own host is never counted as a source.
            let own = domain.to_ascii_lowercase();
            prop_assert_eq!(referrer_domain(&format!("http://{domain}/{path}"), Some(&own)), None);
        }
    }
}
