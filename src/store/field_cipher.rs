//! Personal fields at rest: Fernet tokens (the format Python's `cryptography.fernet` writes:
//! version byte, timestamp, IV, AES-128-CBC ciphertext, HMAC-SHA256), with `MultiFernet`'s
//! rotation: encrypt with the first key, decrypt with any. Pure, apart from counting failures.
//!
//! A stored value is read as a token when it looks like one (`gAAAAA`: version 0x80 and a
//! timestamp below 2^32); anything else is plaintext written before encryption was turned on
//! (`sting-proxy rotate-keys` seals it). A token no key opens (a wrong key, a tampered or
//! truncated token) is an error, counted in `sting_field_decrypt_errors_total`: never a crash,
//! never the token shown as if it were the value.

use fernet::{Fernet, MultiFernet};

use crate::config::Secret;

/// How every Fernet token begins (base64url of 0x80 and the high bytes of the timestamp).
pub const TOKEN_PREFIX: &str = "gAAAAA";

/// A stored field could not be decrypted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("an encrypted field could not be decrypted (wrong key, or the token was altered)")]
pub struct Unreadable;

/// Seals and opens personal fields; a no-op without keys.
pub struct FieldCipher {
    multi: Option<MultiFernet>,
    /// The first key alone: which tokens `rotate-keys` may leave as they are.
    first: Option<Fernet>,
}

impl std::fmt::Debug for FieldCipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FieldCipher").field("enabled", &self.multi.is_some()).finish()
    }
}

impl FieldCipher {
    /// No encryption: values are stored as they are.
    pub fn disabled() -> Self {
        FieldCipher { multi: None, first: None }
    }

    /// `keys`, newest first: url-safe base64 of 32 bytes each (`Fernet.generate_key()`).
    /// The error names the key by position (never its value).
    pub fn new(keys: &[Secret]) -> Result<Self, String> {
        if keys.is_empty() {
            return Ok(Self::disabled());
        }
        crate::config::privacy::check_keys(keys.iter().map(Secret::expose))?;
        let fernets: Vec<Fernet> = keys.iter().filter_map(|k| Fernet::new(k.expose().trim())).collect();
        let first = Fernet::new(keys[0].expose().trim());
        Ok(FieldCipher { multi: Some(MultiFernet::new(fernets)), first })
    }

    pub fn enabled(&self) -> bool {
        self.multi.is_some()
    }

    /// `plain` as stored: a token under the first key, or `plain` itself without keys.
    pub fn seal(&self, plain: &str) -> String {
        match &self.multi {
            Some(m) => m.encrypt(plain.as_bytes()),
            None => plain.to_owned(),
        }
    }

    /// The value of a stored field: a token opened with any key, or plaintext stored before
    /// encryption was on. Failures are counted.
    pub fn open(&self, stored: &str) -> Result<String, Unreadable> {
        if !is_token(stored) {
            return Ok(stored.to_owned());
        }
        let opened = self.multi.as_ref().and_then(|m| m.decrypt(stored).ok()).and_then(|b| String::from_utf8(b).ok());
        opened.ok_or_else(|| {
            crate::observe::metrics::metrics().field_decrypt_errors.inc();
            Unreadable
        })
    }

    /// `stored` sealed under the first key (opened first with any key); `None` when it already
    /// is, or without keys. For `rotate-keys`.
    pub fn reseal(&self, stored: &str) -> Result<Option<String>, Unreadable> {
        let Some(m) = &self.multi else { return Ok(None) };
        let plain = self.open(stored)?;
        if is_token(stored) && self.sealed_with_first(stored) {
            return Ok(None);
        }
        Ok(Some(m.encrypt(plain.as_bytes())))
    }

    fn sealed_with_first(&self, token: &str) -> bool {
        // MultiFernet hides which key opened a token; the first key alone tells.
        self.first.as_ref().is_some_and(|f| f.decrypt(token).is_ok())
    }
}

static INSTALLED: std::sync::OnceLock<std::sync::Arc<FieldCipher>> = std::sync::OnceLock::new();

/// Makes `cipher` the process's (the server and CLI do, once, from the config): readers of
/// stored records ([`installed`]) open fields with it. Later calls are ignored.
pub fn install(cipher: std::sync::Arc<FieldCipher>) {
    let _ = INSTALLED.set(cipher);
}

/// The process's cipher; a disabled one before [`install`] (tokens then read as unreadable).
pub fn installed() -> &'static FieldCipher {
    static DISABLED: std::sync::OnceLock<FieldCipher> = std::sync::OnceLock::new();
    match INSTALLED.get() {
        Some(c) => c,
        None => DISABLED.get_or_init(FieldCipher::disabled),
    }
}

/// A stored personal field as readers show it: opened, or `None` when it cannot be (counted).
pub fn shown(stored: &str) -> Option<String> {
    installed().open(stored).ok()
}

/// Whether `stored` is (or was: a truncated or altered one) a Fernet token. No value the proxy
/// stores in the clear (addresses, emails, `h:`/`p` hashes) starts so.
pub fn is_token(stored: &str) -> bool {
    stored.starts_with(TOKEN_PREFIX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const K1: &str = "cw_0x689RpI-jtRR7oE8h_eQsKImvJapLeSbXpwF4e4=";
    const K2: &str = "Pm9Ojz9lYUK3b0hd4Ru5hsCCWcqwOuCFyrS8gPq0ODc=";

    #[test]
    fn seals_opens_and_rotates_like_multifernet() {
        let old = FieldCipher::new(&[Secret::new(K1)]).unwrap();
        let token = old.seal("alice@example.com");
        assert!(is_token(&token) && !token.contains("alice"), "{token}");
        assert_eq!(old.open(&token).unwrap(), "alice@example.com");
        let rotated = FieldCipher::new(&[Secret::new(K2), Secret::new(K1)]).unwrap();
        assert_eq!(rotated.open(&token).unwrap(), "alice@example.com");
        let resealed = rotated.reseal(&token).unwrap().unwrap();
        assert_eq!(FieldCipher::new(&[Secret::new(K2)]).unwrap().open(&resealed).unwrap(), "alice@example.com");
        assert_eq!(rotated.reseal(&resealed).unwrap(), None, "already under the first key");
        assert!(rotated.reseal("plain").unwrap().is_some(), "plaintext gets sealed");
    }

    #[test]
    fn wrong_keys_and_tampering_are_errors_never_plaintext() {
        let c = FieldCipher::new(&[Secret::new(K1)]).unwrap();
        let token = c.seal("10.1.2.3");
        assert_eq!(FieldCipher::new(&[Secret::new(K2)]).unwrap().open(&token), Err(Unreadable));
        assert_eq!(FieldCipher::disabled().open(&token), Err(Unreadable));
        let mut bytes = token.into_bytes();
        let i = bytes.len() - 10;
        bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
        assert_eq!(c.open(&String::from_utf8(bytes).unwrap()), Err(Unreadable));
        assert_eq!(c.open("written before encryption").unwrap(), "written before encryption");
        assert_eq!(c.open("gAAAAAtruncated"), Err(Unreadable), "a cut token is not shown as a value");
    }

    #[test]
    fn bad_keys_are_named_by_position() {
        let e = FieldCipher::new(&[Secret::new(K1), Secret::new("short")]).unwrap_err();
        assert!(e.contains("key 2") && !e.contains("short"), "{e}");
    }
}
