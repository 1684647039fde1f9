//! Flask-Session cookie verification. Pure functions; no I/O.
//!
//! Flask-Session (0.4 – 0.8) signs only the session id, with itsdangerous's `Signer`:
//! `derived = HMAC-SHA1(secret, "flask-session")`, `sig = HMAC-SHA1(derived, sid)`, and the cookie
//! is `sid + "." + base64url_nopad(sig)`. The cookie carries no timestamp: whether the session is
//! still alive is decided by the Redis key alone. See `docs/interop.md`.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha1::Sha1;

type HmacSha1 = Hmac<Sha1>;

/// The salt Flask-Session passes to itsdangerous; a literal in every released version.
const SALT: &[u8] = b"flask-session";
/// Length of a base64url (no padding) SHA-1 signature.
const SIGNATURE_B64_LEN: usize = 27;
/// Longest sid we accept: uuid4 is 36 chars, `token_urlsafe(32)` 43; leave room for custom ids.
pub const MAX_SID_LEN: usize = 128;

/// Verifies (and, for tests and tools, produces) Flask-Session cookie values.
///
/// Keys are derived once at start-up; verifying a cookie costs two HMAC-SHA1 blocks per key tried.
#[derive(Clone)]
pub struct CookieSigner {
    mode: Mode,
}

#[derive(Clone)]
enum Mode {
    /// `SESSION_USE_SIGNER = False`: the cookie is the bare sid.
    Unsigned,
    /// Current key first, then the fallbacks (key rotation).
    Signed(Vec<HmacSha1>),
}

/// Why a cookie value was not accepted. Every variant means "anonymous".
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CookieError {
    #[error("cookie has no signature separator")]
    NoSeparator,
    #[error("session id is empty, too long or has characters outside [A-Za-z0-9_-]")]
    BadSid,
    #[error("signature is not 27 base64url characters")]
    MalformedSignature,
    #[error("signature does not match any configured secret")]
    BadSignature,
}

impl CookieSigner {
    /// A signer for `SESSION_USE_SIGNER = True`, trying `secret` first and then each fallback.
    pub fn signed<S: AsRef<[u8]>>(secret: S, fallbacks: &[S]) -> Self {
        let keys = std::iter::once(&secret).chain(fallbacks.iter()).map(|s| derive_key(s.as_ref())).collect();
        Self { mode: Mode::Signed(keys) }
    }

    /// A verifier for `SESSION_USE_SIGNER = False`.
    pub fn unsigned() -> Self {
        Self { mode: Mode::Unsigned }
    }

    /// Returns the sid carried by a cookie value, or why it is not acceptable.
    ///
    /// The comparison is constant-time (`Mac::verify_slice`), so a forger learns nothing from timing.
    pub fn verify<'a>(&self, cookie_value: &'a str) -> Result<&'a str, CookieError> {
        match &self.mode {
            Mode::Unsigned => check_sid(cookie_value),
            Mode::Signed(keys) => {
                let (sid, sig_b64) = cookie_value.rsplit_once('.').ok_or(CookieError::NoSeparator)?;
                let sid = check_sid(sid)?;
                if sig_b64.len() != SIGNATURE_B64_LEN {
                    return Err(CookieError::MalformedSignature);
                }
                let mut sig = [0u8; 24];
                let n = URL_SAFE_NO_PAD.decode_slice(sig_b64, &mut sig).map_err(|_| CookieError::MalformedSignature)?;
                let sig = &sig[..n];
                for key in keys {
                    let mut mac = key.clone();
                    mac.update(sid.as_bytes());
                    if mac.verify_slice(sig).is_ok() {
                        return Ok(sid);
                    }
                }
                Err(CookieError::BadSignature)
            }
        }
    }

    /// The cookie value Flask-Session would set for `sid` with the current secret.
    pub fn sign(&self, sid: &str) -> String {
        match &self.mode {
            Mode::Unsigned => sid.to_owned(),
            Mode::Signed(keys) => {
                let mut mac = keys[0].clone();
                mac.update(sid.as_bytes());
                let sig = mac.finalize().into_bytes();
                format!("{sid}.{}", URL_SAFE_NO_PAD.encode(sig))
            }
        }
    }
}

/// itsdangerous `key_derivation="hmac"`: HMAC(secret, salt), used as the signing key.
fn derive_key(secret: &[u8]) -> HmacSha1 {
    let mut mac = HmacSha1::new_from_slice(secret).expect("HMAC accepts any key length");
    mac.update(SALT);
    let derived = mac.finalize().into_bytes();
    HmacSha1::new_from_slice(&derived).expect("HMAC accepts any key length")
}

/// Accepts both sid shapes Flask-Session generates (uuid4, `token_urlsafe`) and nothing that
/// could smuggle a different Redis key (no `:`, `*`, spaces or control characters).
fn check_sid(sid: &str) -> Result<&str, CookieError> {
    let ok = !sid.is_empty() && sid.len() <= MAX_SID_LEN && sid.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(sid)
    } else {
        Err(CookieError::BadSid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const TOKEN_SID: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8";
    const UUID_SID: &str = "6f1c2b3a-4d5e-4f60-8a7b-9c0d1e2f3a4b";

    /// Vectors produced by a real Flask app (docs/interop.md); the integration suite also
    /// regenerates fresh ones from the installed Flask-Session.
    #[test]
    fn matches_flask_session_vectors() {
        let s = CookieSigner::signed("test-secret", &[]);
        assert_eq!(s.sign(TOKEN_SID), format!("{TOKEN_SID}.epC2RSSJLkP1L6dqmDdFEcE3xr8"));
        assert_eq!(s.sign(UUID_SID), format!("{UUID_SID}.JAutm3JB1LY8i9L4Hk1shzC47Pw"));
        let other = CookieSigner::signed("another-secret", &[]);
        assert_eq!(other.sign(TOKEN_SID), format!("{TOKEN_SID}.VKC_w0tudxCRRdHK_vWDqynd1Bg"));
    }

    #[test]
    fn verifies_both_sid_shapes() {
        let s = CookieSigner::signed("test-secret", &[]);
        assert_eq!(s.verify(&format!("{TOKEN_SID}.epC2RSSJLkP1L6dqmDdFEcE3xr8")), Ok(TOKEN_SID));
        assert_eq!(s.verify(&format!("{UUID_SID}.JAutm3JB1LY8i9L4Hk1shzC47Pw")), Ok(UUID_SID));
    }

    #[test]
    fn wrong_key_and_tampering_are_rejected() {
        let s = CookieSigner::signed("test-secret", &[]);
        let foreign = format!("{TOKEN_SID}.VKC_w0tudxCRRdHK_vWDqynd1Bg");
        assert_eq!(s.verify(&foreign), Err(CookieError::BadSignature));
        let tampered = format!("B{}.epC2RSSJLkP1L6dqmDdFEcE3xr8", &TOKEN_SID[1..]);
        assert_eq!(s.verify(&tampered), Err(CookieError::BadSignature));
        assert_eq!(s.verify(TOKEN_SID), Err(CookieError::NoSeparator));
        assert_eq!(s.verify(&format!("{TOKEN_SID}.short")), Err(CookieError::MalformedSignature));
        assert_eq!(s.verify("a:b.epC2RSSJLkP1L6dqmDdFEcE3xr8"), Err(CookieError::BadSid));
        assert_eq!(s.verify(".epC2RSSJLkP1L6dqmDdFEcE3xr8"), Err(CookieError::BadSid));
    }

    #[test]
    fn fallback_secret_is_accepted_after_rotation() {
        let rotated = CookieSigner::signed("new-secret", &["test-secret"]);
        let old_cookie = format!("{TOKEN_SID}.epC2RSSJLkP1L6dqmDdFEcE3xr8");
        assert_eq!(rotated.verify(&old_cookie), Ok(TOKEN_SID));
        // New cookies are signed with the current secret only.
        assert_ne!(rotated.sign(TOKEN_SID), old_cookie);
    }

    #[test]
    fn unsigned_mode_takes_the_bare_sid() {
        let s = CookieSigner::unsigned();
        assert_eq!(s.verify(UUID_SID), Ok(UUID_SID));
        assert_eq!(s.verify("has space"), Err(CookieError::BadSid));
    }

    proptest! {
        /// Any sid we sign verifies; flipping any character of the signature breaks it.
        #[test]
        fn sign_verify_roundtrip(sid in "[A-Za-z0-9_-]{1,64}", secret in ".{0,40}", idx in 0usize..27) {
            let s = CookieSigner::signed(secret.as_bytes(), &[]);
            let cookie = s.sign(&sid);
            prop_assert_eq!(s.verify(&cookie), Ok(sid.as_str()));
            let mut bytes = cookie.into_bytes();
            let pos = bytes.len() - 27 + idx;
            bytes[pos] = if bytes[pos] == b'A' { b'B' } else { b'A' };
            let forged = String::from_utf8(bytes).unwrap();
            prop_assert!(s.verify(&forged).is_err());
        }

        /// Arbitrary input never panics and never yields a sid that could name another key.
        #[test]
        fn arbitrary_cookie_values_are_safe(value in ".{0,300}") {
            let s = CookieSigner::signed("k", &["old"]);
            if let Ok(sid) = s.verify(&value) {
                prop_assert!(sid.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
            }
            let _ = CookieSigner::unsigned().verify(&value);
        }
    }
}
