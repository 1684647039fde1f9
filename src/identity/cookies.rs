//! Reading cookies from request headers and noticing cleared cookies in responses. Pure
//! functions; no I/O. Parsers of untrusted input: property-tested and fuzzed.

use pingora::http::{RequestHeader, ResponseHeader};

/// Longest cookie value we consider; anything longer is not a session cookie we issued.
pub const MAX_COOKIE_VALUE: usize = 4096;

/// The value of the first cookie called `name` across all `Cookie` headers.
pub fn find<'a>(req: &'a RequestHeader, name: &str) -> Option<&'a str> {
    req.headers.get_all(http::header::COOKIE).iter().filter_map(|v| v.to_str().ok()).find_map(|header| find_in(header, name))
}

/// The value of cookie `name` in one `Cookie` header value (`a=1; b=2`).
pub fn find_in<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header.split(';').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        if k.trim() != name {
            return None;
        }
        let v = v.trim();
        let v = v.strip_prefix('"').and_then(|x| x.strip_suffix('"')).unwrap_or(v);
        (!v.is_empty() && v.len() <= MAX_COOKIE_VALUE).then_some(v)
    })
}

/// What a response does to cookie `name`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CookieChange {
    /// Set to this value.
    Set(String),
    /// Deleted (empty value, `Max-Age=0` or an `Expires` in the past).
    Cleared,
}

/// The last change a response makes to cookie `name`, if any.
pub fn change_in_response(resp: &ResponseHeader, name: &str, now: chrono::DateTime<chrono::Utc>) -> Option<CookieChange> {
    resp.headers.get_all(http::header::SET_COOKIE).iter().filter_map(|v| v.to_str().ok()).filter_map(|v| parse_set_cookie(v, name, now)).next_back()
}

/// One `Set-Cookie` value, if it is about `name`.
pub fn parse_set_cookie(value: &str, name: &str, now: chrono::DateTime<chrono::Utc>) -> Option<CookieChange> {
    let c = cookie::Cookie::parse(value).ok()?;
    if c.name() != name {
        return None;
    }
    let expired_by_max_age = c.max_age().is_some_and(|a| a.whole_seconds() <= 0);
    let expired_by_date = c.expires_datetime().is_some_and(|t| t.unix_timestamp() <= now.timestamp());
    if c.value().is_empty() || expired_by_max_age || expired_by_date {
        Some(CookieChange::Cleared)
    } else {
        Some(CookieChange::Set(c.value().to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn finds_cookie_among_others() {
        assert_eq!(find_in("a=1; session=abc.def; b=2", "session"), Some("abc.def"));
        assert_eq!(find_in("xsession=1;session=\"q\"", "session"), Some("q"));
        assert_eq!(find_in("session=", "session"), None);
        assert_eq!(find_in("nonsense", "session"), None);
    }

    #[test]
    fn finds_across_multiple_cookie_headers() {
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        req.append_header("cookie", "a=1").unwrap();
        req.append_header("cookie", "session=s1").unwrap();
        assert_eq!(find(&req, "session"), Some("s1"));
    }

    #[test]
    fn recognises_flask_session_logout() {
        let now = chrono::Utc::now();
        let cleared = "session=; Expires=Thu, 01 Jan 1970 00:00:00 GMT; Max-Age=0; Path=/";
        assert_eq!(parse_set_cookie(cleared, "session", now), Some(CookieChange::Cleared));
        let set = "session=abc.def; Expires=Wed, 01 Dec 2100 10:00:00 GMT; HttpOnly; Path=/";
        assert_eq!(parse_set_cookie(set, "session", now), Some(CookieChange::Set("abc.def".into())));
        assert_eq!(parse_set_cookie("a=1; Path=/", "session", now), None);
    }

    proptest! {
        /// Arbitrary header text never panics and never returns an oversized value.
        #[test]
        fn arbitrary_cookie_headers(h in ".{0,600}") {
            if let Some(v) = find_in(&h, "session") {
                prop_assert!(!v.is_empty() && v.len() <= MAX_COOKIE_VALUE);
            }
            let _ = parse_set_cookie(&h, "session", chrono::Utc::now());
        }
    }
}
