//! Route templates and request classes for analytics. Pure functions; no I/O.
//!
//! Page statistics are keyed by template (`/users/:id/docs/:id`), never by raw path, so their
//! cardinality stays bounded whatever ids and tokens appear in URLs. Segments that look like
//! identifiers (numbers, UUIDs, long hex, long base64/token strings) become `:id`; operators can
//! add their own templates (`/files/:name`) which win over the automatic rules.

/// Longest path we template; beyond this the path is `/:long`.
const MAX_PATH: usize = 2048;
/// Most segments kept; deeper paths end in `/…`.
const MAX_SEGMENTS: usize = 12;

/// The one template of responses the app did not route (404, 405).
pub const UNMATCHED_ROUTE: &str = "unmatched";

/// Turns raw paths into templates.
#[derive(Debug, Clone, Default)]
pub struct RouteTemplater {
    /// Operator templates, split into segments; `:name` matches any one segment.
    custom: Vec<Vec<String>>,
}

impl RouteTemplater {
    /// `patterns` like `/files/:name` or `/u/:user/settings`; each must start with `/`.
    pub fn new(patterns: &[String]) -> Result<Self, String> {
        let custom = patterns
            .iter()
            .map(|p| {
                if !p.starts_with('/') {
                    return Err(format!("route template {p:?} must start with '/'"));
                }
                Ok(p.split('/').skip(1).map(str::to_owned).collect())
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { custom })
    }

    /// The template for `path` (no query string).
    /// The template a response is recorded under: [`UNMATCHED_ROUTE`] when the app routed
    /// nothing (404, 405), so random paths cannot use up label or page budgets; else the
    /// path's template.
    pub fn template_for(&self, path: &str, status: u16) -> String {
        if matches!(status, 404 | 405) {
            return UNMATCHED_ROUTE.to_owned();
        }
        self.template(path)
    }

    pub fn template(&self, path: &str) -> String {
        if path.len() > MAX_PATH {
            return "/:long".to_owned();
        }
        let decoded: Vec<std::borrow::Cow<str>> = path.split('/').skip(1).map(display_segment).collect();
        let segments: Vec<&str> = decoded.iter().map(|s| s.as_ref()).collect();
        for pattern in &self.custom {
            if pattern.len() == segments.len() && pattern.iter().zip(&segments).all(|(p, s)| p.starts_with(':') || p == s) {
                return format!("/{}", pattern.join("/"));
            }
        }
        let mut out = String::with_capacity(path.len().min(128));
        for (i, seg) in segments.iter().enumerate() {
            if i == MAX_SEGMENTS {
                out.push_str("/…");
                break;
            }
            out.push('/');
            if looks_like_id(seg) {
                out.push_str(":id");
            } else {
                out.push_str(seg);
            }
        }
        if out.is_empty() {
            out.push('/');
        }
        out
    }
}

/// A raw path segment as people read it: percent-escapes decoded (`caf%C3%A9` → `café`,
/// `%3Cb%3E` → `<b>`), except those that would hide structure or control the display: `/`,
/// `%`, control characters and a leading `:` stay escaped; decoded C1 controls and bidi
/// overrides become `?`. Invalid UTF-8 becomes U+FFFD.
pub fn display_segment(seg: &str) -> std::borrow::Cow<'_, str> {
    if !seg.contains('%') {
        return std::borrow::Cow::Borrowed(seg);
    }
    let b = seg.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                let v = (h * 16 + l) as u8;
                // A leading ':' would read as a placeholder (`:id`).
                let placeholder_like = v == b':' && out.is_empty();
                if v >= 0x20 && v != 0x7f && v != b'/' && v != b'%' && !placeholder_like {
                    out.push(v);
                    i += 3;
                    continue;
                }
            }
        }
        out.push(b[i]);
        i += 1;
    }
    // Decoded text must not carry invisible controls (C1) or reorder what is shown (bidi).
    std::borrow::Cow::Owned(crate::observe::printable::sanitize(&String::from_utf8_lossy(&out)))
}

/// Numbers, UUIDs, hex of 16+ chars, token-like strings of 20+ chars mixing letters and digits,
/// and anything over 64 chars.
pub fn looks_like_id(seg: &str) -> bool {
    let b = seg.as_bytes();
    if b.is_empty() {
        return false;
    }
    // Very long segments are data, not routes; keep them out of page statistics.
    if b.len() > 64 {
        return true;
    }
    if b.iter().all(u8::is_ascii_digit) {
        return true;
    }
    if is_uuid(b) {
        return true;
    }
    if b.len() >= 16 && b.iter().all(u8::is_ascii_hexdigit) && b.iter().any(u8::is_ascii_digit) {
        return true;
    }
    let tokenish = b.iter().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'=' | b'%' | b'.'));
    b.len() >= 20 && tokenish && b.iter().any(u8::is_ascii_digit) && b.iter().any(u8::is_ascii_alphabetic)
}

fn is_uuid(b: &[u8]) -> bool {
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

/// Static assets count as hits, never as page views.
#[derive(Debug, Clone)]
pub struct AssetRules {
    pub extensions: Vec<String>,
    pub prefixes: Vec<String>,
}

impl Default for AssetRules {
    fn default() -> Self {
        let ext = [
            "css",
            "js",
            "mjs",
            "map",
            "png",
            "jpg",
            "jpeg",
            "gif",
            "svg",
            "ico",
            "webp",
            "avif",
            "woff",
            "woff2",
            "ttf",
            "eot",
            "txt",
            "xml",
            "json",
            "webmanifest",
        ];
        Self { extensions: ext.iter().map(|s| s.to_string()).collect(), prefixes: vec!["/static/".into(), "/assets/".into(), "/favicon".into()] }
    }
}

impl AssetRules {
    pub fn is_asset(&self, path: &str) -> bool {
        if self.prefixes.iter().any(|p| path.starts_with(p.as_str())) {
            return true;
        }
        let last = path.rsplit('/').next().unwrap_or("");
        match last.rsplit_once('.') {
            Some((_, ext)) => self.extensions.iter().any(|e| e.eq_ignore_ascii_case(ext)),
            None => false,
        }
    }
}

/// Whether a request looks like a browser navigation rather than an XHR/fetch for data: the
/// client accepts HTML (or said nothing about what it accepts), did not mark itself as XHR, and
/// is not a non-navigation fetch.
pub fn is_navigation(accept: Option<&str>, requested_with: Option<&str>, fetch_mode: Option<&str>) -> bool {
    if requested_with.is_some_and(|v| v.eq_ignore_ascii_case("xmlhttprequest")) {
        return false;
    }
    if fetch_mode.is_some_and(|m| m != "navigate") {
        return false;
    }
    match accept {
        None => true,
        Some(a) => a.contains("text/html") || a.contains("*/*") && !a.contains("application/json"),
    }
}

/// A page view is a successful GET navigation that is not a static asset.
pub fn is_page_view(method: &http::Method, status: u16, is_asset: bool, navigation: bool) -> bool {
    method == http::Method::GET && (200..300).contains(&status) && !is_asset && navigation
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn ids_become_placeholders() {
        let t = RouteTemplater::default();
        assert_eq!(t.template("/users/123/docs/9f1c2b3a4d5e6f708192a3b4c5d6e7f8"), "/users/:id/docs/:id");
        assert_eq!(t.template("/s/6f1c2b3a-4d5e-4f60-8a7b-9c0d1e2f3a4b"), "/s/:id");
        assert_eq!(t.template("/t/AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8"), "/t/:id");
        assert_eq!(t.template("/dashboard"), "/dashboard");
        assert_eq!(t.template("/"), "/");
        assert_eq!(t.template(""), "/");
        assert_eq!(t.template("/about-our-company-and-team"), "/about-our-company-and-team");
    }

    #[test]
    fn escapes_are_decoded_for_reading_but_not_structure_or_controls() {
        let t = RouteTemplater::default();
        assert_eq!(t.template("/caf%C3%A9/menu"), "/café/menu");
        assert_eq!(t.template("/echo/%3Cscript%3Ealert(1)%3C/script%3E"), "/echo/<script>alert(1)</script>");
        assert_eq!(t.template("/a%2Fb/c%25d/e%0Af/g%7F"), "/a%2Fb/c%25d/e%0Af/g%7F");
        assert_eq!(t.template("/bad%ZZ/%4"), "/bad%ZZ/%4");
        assert_eq!(t.template("/x%FF"), "/x\u{fffd}");
        assert_eq!(t.template("/users/%31%32%33"), "/users/:id", "an id is an id however it is spelled");
        assert_eq!(t.template("/%3Aid/a%E2%80%AEb/c%C2%9Bd"), "/%3Aid/a?b/c?d");
    }

    #[test]
    fn custom_templates_win() {
        let t = RouteTemplater::new(&["/files/:name".into()]).unwrap();
        assert_eq!(t.template("/files/report.pdf"), "/files/:name");
        assert_eq!(t.template("/files/a/b"), "/files/a/b");
        assert!(RouteTemplater::new(&["files".into()]).is_err());
    }

    #[test]
    fn assets_and_page_views() {
        let a = AssetRules::default();
        assert!(a.is_asset("/static/app.js") && a.is_asset("/img/logo.PNG") && a.is_asset("/favicon.ico"));
        assert!(!a.is_asset("/dashboard") && !a.is_asset("/v1.2/docs"));
        assert!(is_navigation(Some("text/html,application/xhtml+xml"), None, Some("navigate")));
        assert!(is_navigation(None, None, None));
        assert!(is_navigation(Some("*/*"), None, None));
        assert!(!is_navigation(Some("application/json"), None, None));
        assert!(!is_navigation(Some("text/html"), Some("XMLHttpRequest"), None));
        assert!(!is_navigation(Some("*/*"), None, Some("cors")));
        let get = http::Method::GET;
        assert!(is_page_view(&get, 200, false, true));
        assert!(!is_page_view(&http::Method::POST, 200, false, true));
        assert!(!is_page_view(&get, 404, false, true));
        assert!(!is_page_view(&get, 200, true, true));
        assert!(!is_page_view(&get, 200, false, false));
    }

    proptest! {
        /// Templates are bounded in length and depth whatever the path, and never contain a
        /// segment that looks like an id.
        #[test]
        fn templates_are_bounded(path in "(/[a-zA-Z0-9_.%-]{0,40}){0,30}") {
            let t = RouteTemplater::default().template(&path);
            prop_assert!(t.starts_with('/'));
            prop_assert!(t.split('/').count() <= MAX_SEGMENTS + 2);
            prop_assert!(t.split('/').all(|s| !looks_like_id(s)));
        }

        #[test]
        fn numbers_collapse(a in 0u64.., b in 0u64..) {
            prop_assert_eq!(RouteTemplater::default().template(&format!("/o/{a}/i/{b}")), "/o/:id/i/:id");
        }
    }
}
