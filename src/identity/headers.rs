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

/// Removes every identity header the client sent, in one pass over the header map.
pub fn strip_identity_headers(req: &mut RequestHeader) {
    let forged: Vec<http::HeaderName> = req.headers.keys().filter(|n| is_identity_header(n.as_str())).cloned().collect();
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
        strip_identity_headers(&mut req);
        let left: Vec<_> = req.headers.keys().map(|k| k.as_str().to_owned()).collect();
        assert_eq!(left, vec!["x-other"]);
        assert!(!is_identity_header("x-session-idx") && !is_identity_header("x-username") && !is_identity_header("x-sessions-id"));
    }
}
