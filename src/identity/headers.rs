//! Header names the proxy sets or strips, in one place. Pure functions; no I/O.

use pingora::http::RequestHeader;

pub const X_USER_ID: &str = "x-user-id";
pub const X_USER_EMAIL: &str = "x-user-email";
pub const X_USER_ROLE: &str = "x-user-role";
pub const X_SESSION_ID: &str = "x-session-id";
pub const X_AUTH_SOURCE: &str = "x-auth-source";
pub const X_AUTH_AAL: &str = "x-auth-aal";
pub const X_REQUEST_ID: &str = "x-request-id";
pub const X_FORWARDED_FOR: &str = "x-forwarded-for";
pub const X_FORWARDED_PROTO: &str = "x-forwarded-proto";
pub const X_FORWARDED_HOST: &str = "x-forwarded-host";
pub const X_SESSION_TOKEN: &str = "x-session-token";

/// True for identity headers a client must never be able to set: `X-User-*`, `X-Auth-*`,
/// `X-Session-Id`, also spelled with underscores (`X_User_Id`), which some WSGI servers map to
/// the same `HTTP_X_USER_ID` variable. (`http` lower-cases header names.)
pub fn is_identity_header(name: &str) -> bool {
    let n = name.as_bytes();
    let dashed = |i: usize| n.get(i).is_some_and(|b| *b == b'-' || *b == b'_');
    let at = |i: usize, lit: &str| n.len() >= i + lit.len() && &n[i..i + lit.len()] == lit.as_bytes();
    if !(at(0, "x") && dashed(1)) {
        return false;
    }
    (at(2, "user") && dashed(6)) || (at(2, "auth") && dashed(6)) || (at(2, "session") && dashed(9) && at(10, "id") && n.len() == 12)
}

/// Headers that tell an app where a request came from or what URL it used: `Forwarded`, every
/// `X-Forwarded-*` (`-Host`, `-Port`, `-Prefix`, `-Server`, ...), and the client-address headers of
/// common CDNs and proxies. Werkzeug's `ProxyFix` and similar middleware believe them, so a client
/// that sets `X-Forwarded-Host` picks the host of the app's absolute URLs (password-reset links).
const FORWARDING: &[&str] = &[
    "forwarded",
    "x-real-ip",
    "x-client-ip",
    "true-client-ip",
    "cf-connecting-ip",
    "fastly-client-ip",
    "x-cluster-client-ip",
    "x-original-forwarded-for",
    "x-original-url",
    "x-rewrite-url",
    "x-original-host",
    "x-host",
    "front-end-https",
    "x-url-scheme",
];

/// True for forwarding headers (see [`FORWARDING`]), in any case, with dashes or underscores.
/// (`http` lower-cases header names.)
pub fn is_forwarding_header(name: &str) -> bool {
    let n = name.as_bytes();
    let eq = |lit: &str| n.len() == lit.len() && n.iter().zip(lit.bytes()).all(|(a, b)| *a == b || (*a == b'_' && b == b'-'));
    let prefixed = n.len() > 12 && n[..12].iter().zip(b"x-forwarded-").all(|(a, b)| a == b || (*a == b'_' && *b == b'-'));
    prefixed || FORWARDING.iter().any(|f| eq(f))
}

/// What to remove from a request before it goes upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strip {
    /// Identity headers, and every forwarding header (the sender is not a trusted proxy).
    IdentityAndForwarding,
    /// Identity headers, and forwarding headers spelled with underscores (a trusted proxy
    /// writes dashes; underscores are a client's way around it).
    IdentityOnly,
}

/// Removes every identity header the client sent, and forwarding headers as `strip` says, in
/// one pass over the header map.
pub fn strip_client_headers(req: &mut RequestHeader, strip: Strip) {
    let forged: Vec<http::HeaderName> = req
        .headers
        .keys()
        .filter(|n| {
            let n = n.as_str();
            is_identity_header(n) || (is_forwarding_header(n) && (strip == Strip::IdentityAndForwarding || n.contains('_')))
        })
        .cloned()
        .collect();
    for name in forged {
        req.remove_header(&name);
    }
}

/// A `Host` value fit to repeat as `X-Forwarded-Host`: a DNS name or address with an optional
/// port, nothing else (no spaces, commas, slashes or `@`).
pub fn valid_host(h: &str) -> bool {
    !h.is_empty() && h.len() <= 255 && h.bytes().all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_all_forgeable_identity_headers() {
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        for h in [
            "X-User-Id",
            "x-user-email",
            "X-USER-ROLE",
            "X-User-Anything",
            "X-Auth-Source",
            "X-Auth-AAL",
            "X-Session-Id",
            "X_User_Id",
            "x_auth-source",
            "X_Session_Id",
            "X-Other",
        ] {
            req.append_header(h, "forged").unwrap();
        }
        req.append_header("X-User-Id", "twice").unwrap();
        strip_client_headers(&mut req, Strip::IdentityOnly);
        let left: Vec<_> = req.headers.keys().map(|k| k.as_str().to_owned()).collect();
        assert_eq!(left, vec!["x-other"]);
        assert!(!is_identity_header("x-session-idx") && !is_identity_header("x-username") && !is_identity_header("x-sessions-id"));
    }

    #[test]
    fn strips_forwarding_headers_unless_a_trusted_proxy_sent_them() {
        let names = [
            "Forwarded",
            "X-Forwarded-Host",
            "X-Forwarded-Port",
            "X-Forwarded-Prefix",
            "X-Forwarded-Server",
            "X_Forwarded_Host",
            "X-Real-IP",
            "x_real_ip",
            "X-Client-IP",
            "True-Client-IP",
            "CF-Connecting-IP",
            "X-Keep",
        ];
        let build = || {
            let mut req = RequestHeader::build("GET", b"/", None).unwrap();
            for h in names {
                req.append_header(h, "evil.example").unwrap();
            }
            req
        };
        let mut req = build();
        strip_client_headers(&mut req, Strip::IdentityAndForwarding);
        assert_eq!(req.headers.keys().map(|k| k.as_str()).collect::<Vec<_>>(), vec!["x-keep"]);
        let mut req = build();
        strip_client_headers(&mut req, Strip::IdentityOnly);
        let left: Vec<_> = req.headers.keys().map(|k| k.as_str().to_owned()).collect();
        assert!(left.contains(&"x-forwarded-host".to_owned()) && !left.iter().any(|k| k.contains('_')), "{left:?}");
        assert!(!is_forwarding_header("x-forwarded-") && !is_forwarding_header("x-forwardedhost") && !is_forwarding_header("forwarded-for"));
        assert!(valid_host("app.example.com:8443") && valid_host("[::1]:80") && !valid_host("a.com, evil.com") && !valid_host("a/b") && !valid_host(""));
    }
}
