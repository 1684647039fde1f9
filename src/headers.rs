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
pub const X_SESSION_TOKEN: &str = "x-session-token";

/// True for identity headers a client must never be able to set: `X-User-*`, `X-Auth-*`,
/// `X-Session-Id`. (`http` lower-cases header names, so a byte comparison is enough.)
pub fn is_identity_header(name: &str) -> bool {
    name.starts_with("x-user-") || name.starts_with("x-auth-") || name == X_SESSION_ID
}

/// Removes every identity header the client sent, in one pass over the header map.
pub fn strip_identity_headers(req: &mut RequestHeader) {
    let forged: Vec<http::HeaderName> =
        req.headers.keys().filter(|n| is_identity_header(n.as_str())).cloned().collect();
    for name in forged {
        req.remove_header(&name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_all_forgeable_identity_headers() {
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        for h in ["X-User-Id", "x-user-email", "X-USER-ROLE", "X-User-Anything", "X-Auth-Source", "X-Auth-AAL", "X-Session-Id", "X-Other"] {
            req.append_header(h, "forged").unwrap();
        }
        req.append_header("X-User-Id", "twice").unwrap();
        strip_identity_headers(&mut req);
        let left: Vec<_> = req.headers.keys().map(|k| k.as_str().to_owned()).collect();
        assert_eq!(left, vec!["x-other"]);
    }
}
