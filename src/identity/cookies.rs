//! Reading cookies from request headers and noticing cleared cookies in responses. Pure
//! functions; no I/O. Parsers of untrusted input: property-tested and fuzzed.

use std::borrow::Cow;

use pingora::http::{RequestHeader, ResponseHeader};

/// Longest cookie value we consider; anything longer is not a session cookie we issued.
pub const MAX_COOKIE_VALUE: usize = 4096;

/// Every `Cookie` header of a request as the app will see it: one value, several joined with
/// `"; "` (the proxy forwards exactly this, see [`join_cookie_headers`]). A lone header is
/// borrowed.
pub fn joined(req: &RequestHeader) -> Option<Cow<'_, [u8]>> {
    let mut values = req.headers.get_all(http::header::COOKIE).iter();
    let first = values.next()?;
    let Some(second) = values.next() else { return Some(Cow::Borrowed(first.as_bytes())) };
    let mut out = Vec::with_capacity(first.len() + second.len() + 2);
    for v in std::iter::once(first).chain(std::iter::once(second)).chain(values) {
        if !out.is_empty() {
            out.extend_from_slice(b"; ");
        }
        out.extend_from_slice(v.as_bytes());
    }
    Some(Cow::Owned(out))
}

/// Replaces several `Cookie` headers (HTTP/1 lines or HTTP/2 crumbs) by one, joined with
/// `"; "`: WSGI servers join repeated headers with `,`, which Werkzeug would parse differently.
pub fn join_cookie_headers(req: &mut RequestHeader) -> pingora::Result<()> {
    if req.headers.get_all(http::header::COOKIE).iter().nth(1).is_none() {
        return Ok(());
    }
    let Some(Cow::Owned(one)) = joined(req) else { return Ok(()) };
    let value = http::HeaderValue::from_bytes(&one).map_err(|e| pingora::Error::because(pingora::ErrorType::InvalidHTTPHeader, "joining Cookie", e))?;
    req.remove_header(&http::header::COOKIE);
    req.insert_header(http::header::COOKIE, value)?;
    Ok(())
}

/// The value of cookie `name` as the app reads it: the first occurrence across all `Cookie`
/// headers, parsed as Werkzeug does. `None` when absent, when that first occurrence is empty
/// (Flask-Session then starts a new session, so a later `name=` must not count), when it is
/// longer than [`MAX_COOKIE_VALUE`], or when it is not UTF-8.
pub fn find<'a>(req: &'a RequestHeader, name: &str) -> Option<Cow<'a, str>> {
    match joined(req)? {
        Cow::Borrowed(h) => find_in(h, name),
        Cow::Owned(h) => find_in(&h, name).map(|v| Cow::Owned(v.into_owned())),
    }
}

/// Werkzeug 3.1's `parse_cookie` on one header value, returning the first value of `name`.
///
/// Werkzeug matches, from each position, `[ \t]*` key (`[^ \t=";]+`), an optional
/// `[ \t]*=[ \t]*` value (a `"quoted"` string with backslash escapes, or a token
/// `[^ \t";]*`), `[ \t]*` and then `;` or the end; where that fails it skips past the next `;`.
/// A value in quotes loses them and has `\\ooo` (octal) and `\\x` escapes undone. This is the
/// same grammar, without backtracking (it needs none), on bytes (a WSGI header is latin-1 text:
/// one character per byte).
pub fn find_in<'a>(header: &'a [u8], name: &str) -> Option<Cow<'a, str>> {
    // Werkzeug decodes the whole header as UTF-8 first; on bytes that are not, the app fails
    // the request, so no cookie of it names a session.
    if std::str::from_utf8(header).is_err() {
        return None;
    }
    let mut pos = 0;
    while pos < header.len() {
        match pair_at(header, pos) {
            Some((key, value, end)) => {
                if key == name.as_bytes() {
                    return decode_value(value);
                }
                pos = end;
            }
            None => match header[pos..].iter().position(|b| *b == b';') {
                Some(i) => pos += i + 1,
                None => break,
            },
        }
    }
    None
}

fn is_blank(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// One `key[=value]` at `pos`: the key, the raw value (quotes kept) and where the next starts.
fn pair_at(h: &[u8], pos: usize) -> Option<(&[u8], &[u8], usize)> {
    let skip_blank = |mut i: usize| {
        while i < h.len() && is_blank(h[i]) {
            i += 1;
        }
        i
    };
    // The tail: blanks, then `;` (consumed) or the end.
    let tail = |i: usize| {
        let i = skip_blank(i);
        match h.get(i) {
            None => Some(i),
            Some(b';') => Some(i + 1),
            Some(_) => None,
        }
    };
    let start = skip_blank(pos);
    let mut i = start;
    while i < h.len() && !matches!(h[i], b' ' | b'\t' | b'=' | b'"' | b';') {
        i += 1;
    }
    if i == start {
        return None;
    }
    let key = &h[start..i];
    let eq = skip_blank(i);
    if h.get(eq) != Some(&b'=') {
        return tail(i).map(|end| (key, &h[..0], end));
    }
    let v = skip_blank(eq + 1);
    if h.get(v) == Some(&b'"') {
        let mut j = v + 1;
        let closed = loop {
            match h.get(j) {
                None => break None,
                Some(b'"') => break Some(j + 1),
                Some(b'\\') if h.get(j + 1).is_some_and(|c| *c != b'\n') => j += 2,
                Some(b'\\') => break None,
                Some(_) => j += 1,
            }
        };
        // A quoted value not followed by the tail leaves only an empty token, which fails too.
        return closed.and_then(|q| tail(q).map(|end| (key, &h[v..q], end)));
    }
    let mut j = v;
    while j < h.len() && !matches!(h[j], b' ' | b'\t' | b'"' | b';') {
        j += 1;
    }
    tail(j).map(|end| (key, &h[v..j], end))
}

/// A raw value as the app gets it: unquoted and unescaped; `None` if empty, too long or not
/// UTF-8.
fn decode_value(raw: &[u8]) -> Option<Cow<'_, str>> {
    let value: Cow<'_, [u8]> = if raw.len() >= 2 && raw[0] == b'"' && raw[raw.len() - 1] == b'"' {
        let inner = &raw[1..raw.len() - 1];
        if inner.contains(&b'\\') {
            Cow::Owned(unslash(inner))
        } else {
            Cow::Borrowed(inner)
        }
    } else {
        Cow::Borrowed(raw)
    };
    if value.is_empty() || value.len() > MAX_COOKIE_VALUE {
        return None;
    }
    match value {
        Cow::Borrowed(b) => std::str::from_utf8(b).ok().map(Cow::Borrowed),
        Cow::Owned(v) => String::from_utf8(v).ok().map(Cow::Owned),
    }
}

/// Werkzeug's `_cookie_unslash_re` (`\\([0-3][0-7]{2}|.)`): an octal byte or the escaped byte.
fn unslash(inner: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(inner.len());
    let mut i = 0;
    while i < inner.len() {
        let b = inner[i];
        if b == b'\\' {
            let octal = inner.get(i + 1..i + 4).filter(|d| (b'0'..=b'3').contains(&d[0]) && d[1..].iter().all(|c| (b'0'..=b'7').contains(c)));
            if let Some(d) = octal {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
                continue;
            }
            if let Some(&c) = inner.get(i + 1).filter(|c| **c != b'\n') {
                out.push(c);
                i += 2;
                continue;
            }
        }
        out.push(b);
        i += 1;
    }
    out
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

    fn get(h: &str) -> Option<String> {
        find_in(h.as_bytes(), "session").map(Cow::into_owned)
    }

    #[test]
    fn finds_cookie_among_others() {
        assert_eq!(get("a=1; session=abc.def; b=2").as_deref(), Some("abc.def"));
        assert_eq!(get("xsession=1;session=\"q\"").as_deref(), Some("q"));
        assert_eq!(get("session="), None);
        assert_eq!(get("nonsense"), None);
    }

    /// The cases where a lenient parser and Werkzeug pick different sessions.
    #[test]
    fn first_occurrence_wins_as_in_werkzeug() {
        assert_eq!(get("session=; session=A"), None, "an empty first value is no session, not the second");
        assert_eq!(get("session=A; session=B").as_deref(), Some("A"));
        assert_eq!(get("session=\"A;B\"; session=C").as_deref(), Some("A;B"), "quotes span ';'");
        assert_eq!(get("x=\"a;session=B\"; session=C").as_deref(), Some("C"), "a cookie inside quotes is not a cookie");
        assert_eq!(get("session=\"\\141\\bc\"").as_deref(), Some("abc"), "octal and plain escapes are undone");
        assert_eq!(get("session=a b; session=C").as_deref(), Some("C"), "a value with a space is skipped to the next ';'");
        assert_eq!(get("session = A ").as_deref(), Some("A"));
        assert_eq!(get("session=\"A\"x; session=C").as_deref(), Some("C"));
        assert_eq!(find_in(b"session=A; x=\xff", "session"), None, "not UTF-8: Werkzeug fails the whole header");
    }

    #[test]
    fn multiple_cookie_headers_are_joined_as_forwarded() {
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        req.append_header("cookie", "a=1").unwrap();
        req.append_header("cookie", "session=s1").unwrap();
        assert_eq!(find(&req, "session").as_deref(), Some("s1"));
        join_cookie_headers(&mut req).unwrap();
        let all: Vec<_> = req.headers.get_all("cookie").iter().map(|v| v.to_str().unwrap().to_owned()).collect();
        assert_eq!(all, vec!["a=1; session=s1"]);
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
            if let Some(v) = find_in(h.as_bytes(), "session") {
                prop_assert!(!v.is_empty() && v.len() <= MAX_COOKIE_VALUE);
            }
            let _ = parse_set_cookie(&h, "session", chrono::Utc::now());
        }

        /// Among well-formed cookies, in any order and with any spacing, the first `session`
        /// wins, quoted or not, and later ones never do.
        #[test]
        fn the_first_session_cookie_wins(
            others in proptest::collection::vec(("[a-z]{1,8}", "[A-Za-z0-9._-]{0,12}"), 0..6),
            at in 0usize..6,
            first in "[A-Za-z0-9._-]{1,20}",
            later in "[A-Za-z0-9._-]{0,20}",
            quoted in any::<bool>(),
            sep in prop_oneof![Just(";"), Just("; "), Just(" ;  "), Just(";\t")],
        ) {
            let mut parts: Vec<String> = others.iter().filter(|(k, _)| k != "session").map(|(k, v)| format!("{k}={v}")).collect();
            let at = at.min(parts.len());
            parts.insert(at, if quoted { format!("session=\"{first}\"") } else { format!("session={first}") });
            parts.push(format!("session={later}"));
            let header = parts.join(sep);
            let found = find_in(header.as_bytes(), "session").map(Cow::into_owned);
            prop_assert_eq!(found, Some(first), "{}", header);
        }
    }
}
