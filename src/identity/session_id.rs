//! The session id the proxy publishes: in `X-Session-Id`, analytics keys, the access log, the
//! API and the dashboard. Pure; no I/O.
//!
//! With a signed cookie (`SESSION_USE_SIGNER = True`) the sid alone does not log anyone in
//! (the cookie needs its signature, made with the app's secret), so it is published as it is.
//! Unsigned, the cookie value *is* the sid, and publishing it would hand out the login
//! credential: the proxy then publishes `HMAC-SHA256(key, sid)` (32 hex characters) instead,
//! the same on every instance that shares the key, and keeps the raw sid only to read the app's
//! own Redis key.

use std::borrow::Cow;

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Domain separation: this key is also the app's `SECRET_KEY`.
const CONTEXT: &[u8] = b"sting-proxy published session id v1";
/// Hex characters kept from the HMAC (128 bits).
const PUBLISHED_LEN: usize = 32;

#[derive(Clone)]
pub enum SessionIds {
    /// Signed cookies: the sid is published as it is.
    AsIs,
    /// Unsigned cookies: a keyed hash is published.
    Keyed(Hmac<Sha256>),
}

impl SessionIds {
    /// Keyed by `key` (the configured `session.secret_key`) when `unsigned`.
    pub fn new(unsigned: bool, key: &[u8]) -> Self {
        if !unsigned {
            return SessionIds::AsIs;
        }
        let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes a key of any length");
        mac.update(CONTEXT);
        SessionIds::Keyed(mac)
    }

    /// As `session` configures it: keyed by `session.secret_key` when cookies are unsigned.
    pub fn for_session(session: &crate::config::SessionSection) -> Self {
        Self::new(!session.use_signer, session.secret_key.expose().as_bytes())
    }

    /// True when published ids are hashes, so the app's key cannot be named from them.
    pub fn hashed(&self) -> bool {
        matches!(self, SessionIds::Keyed(_))
    }

    /// The published form of a raw sid.
    pub fn publish<'a>(&self, sid: &'a str) -> Cow<'a, str> {
        match self {
            SessionIds::AsIs => Cow::Borrowed(sid),
            SessionIds::Keyed(base) => {
                let mut mac = base.clone();
                mac.update(sid.as_bytes());
                let mut hex = hex::encode(mac.finalize().into_bytes());
                hex.truncate(PUBLISHED_LEN);
                Cow::Owned(hex)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signed_ids_pass_and_unsigned_ids_are_keyed_hashes() {
        assert_eq!(SessionIds::new(false, b"k").publish("abc"), "abc");
        let ids = SessionIds::new(true, b"k");
        let p = ids.publish("abc");
        assert_eq!(p.len(), 32);
        assert!(!p.contains("abc") && p.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(p, SessionIds::new(true, b"k").publish("abc"), "stable across instances");
        assert_ne!(p, SessionIds::new(true, b"other").publish("abc"), "depends on the key");
        assert_ne!(p, ids.publish("abd"));
    }
}
