//! Every Redis key the proxy reads or writes is spelled here and nowhere else. Pure functions.

/// The app's Flask-Session key for `sid` (read only for us).
pub fn flask_session(prefix: &str, sid: &str) -> String {
    let mut k = String::with_capacity(prefix.len() + sid.len());
    k.push_str(prefix);
    k.push_str(sid);
    k
}

/// Cached Kratos whoami answer, keyed by the SHA-256 of the credential (never the credential).
pub fn kratos_cache(credential_hash_hex: &str) -> String {
    format!("sting:kratos:{credential_hash_hex}")
}

#[cfg(test)]
mod tests {
    #[test]
    fn key_shapes() {
        assert_eq!(super::flask_session("sting:session:", "abc"), "sting:session:abc");
        assert_eq!(super::kratos_cache("00ff"), "sting:kratos:00ff");
    }
}
