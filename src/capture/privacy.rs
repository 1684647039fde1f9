//! The one place personal data takes the form it is kept in: client addresses per
//! `analytics.ip_mode` (and `server.access_log_ip`), and personal fields sealed as Fernet
//! tokens per `analytics.encryption_keys` / `encrypted_fields`. Pure.
//!
//! Geo lookups and the detectors' network prefixes read the full address first; only what is
//! stored or logged is reduced. Aggregates that need equality (breakdowns, unique users,
//! detector fingerprints) never hold ciphertext: they hold parsed, non-identifying values
//! (browser family, country) or, for network prefixes when addresses are not kept, a keyed hash.

use std::net::IpAddr;
use std::sync::Arc;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::config::privacy::IpMode;
use crate::config::Config;
use crate::store::field_cipher::FieldCipher;
use crate::store::keys::Period;

/// How personal data is kept; shared by the writer, the access log, the API and the CLI.
#[derive(Debug)]
pub struct Privacy {
    pub ip_mode: IpMode,
    /// The access log's address form.
    pub log_ip_mode: IpMode,
    cipher: Arc<FieldCipher>,
    seal_email: bool,
    seal_ip: bool,
    /// Keys the address and prefix hashes; derived from the session secret, so every
    /// instance hashes alike.
    hash_key: Vec<u8>,
    pub honor_gpc: bool,
    pub honor_dnt: bool,
}

impl Privacy {
    pub fn new(cfg: &Config) -> Self {
        let a = &cfg.analytics;
        let cipher = FieldCipher::new(&a.encryption_keys).expect("keys were checked when the config was loaded");
        let sealed = |f: &str| cipher.enabled() && a.encrypted_fields.iter().any(|x| x == f);
        let (seal_email, seal_ip) = (sealed("email"), sealed("ip_address"));
        let mut mac = Hmac::<Sha256>::new_from_slice(cfg.session.secret_key.expose().as_bytes()).expect("HMAC takes any key length");
        mac.update(b"sting-proxy address hashing");
        Privacy {
            ip_mode: a.ip_mode,
            log_ip_mode: cfg.server.access_log_ip.unwrap_or(a.ip_mode),
            cipher: Arc::new(cipher),
            seal_email,
            seal_ip,
            hash_key: mac.finalize().into_bytes().to_vec(),
            honor_gpc: a.honor_gpc,
            honor_dnt: a.honor_dnt,
        }
    }

    /// Nothing reduced, nothing sealed (tests, tools).
    pub fn plain() -> Self {
        Privacy {
            ip_mode: IpMode::Full,
            log_ip_mode: IpMode::Full,
            cipher: Arc::new(FieldCipher::disabled()),
            seal_email: false,
            seal_ip: false,
            hash_key: Vec::new(),
            honor_gpc: false,
            honor_dnt: false,
        }
    }

    /// The cipher of stored personal fields (to open them).
    pub fn cipher(&self) -> &Arc<FieldCipher> {
        &self.cipher
    }

    /// `ip` as `mode` keeps it at `ts_ms` (the hash rotates with the UTC day); `None` for `none`.
    pub fn shown_ip(&self, mode: IpMode, ip: IpAddr, ts_ms: i64) -> Option<String> {
        let ip = ip.to_canonical();
        match mode {
            IpMode::Full => Some(crate::observe::printable::ip_text(ip)),
            IpMode::Truncated => Some(truncate(ip).to_string()),
            IpMode::Hashed => Some(format!("h:{}", self.hash(&format!("{}|{ip}", Period::Day.label(ts_ms))))),
            IpMode::None => None,
        }
    }

    /// A client address as analytics stores it: reduced per `ip_mode`, then sealed when
    /// `ip_address` is encrypted; empty when not kept.
    pub fn stored_ip(&self, ip: Option<IpAddr>, ts_ms: i64) -> String {
        match ip.and_then(|ip| self.shown_ip(self.ip_mode, ip, ts_ms)) {
            Some(s) if self.seal_ip => self.cipher.seal(&s),
            Some(s) => s,
            None => String::new(),
        }
    }

    /// An email as analytics stores it.
    pub fn stored_email(&self, email: &str) -> String {
        if self.seal_email && !email.is_empty() {
            self.cipher.seal(email)
        } else {
            email.to_owned()
        }
    }

    /// A network prefix (/24, /48) as the detectors and replay keep it: as it is while
    /// addresses are kept in the clear (`full`, `truncated` without encryption), else a stable
    /// keyed hash (`p4-`/`p6-` and 16 hex digits), equal for equal prefixes.
    /// The hashed form names the family (`p4-`, `p6-`) without a colon: the detectors compare
    /// prefixes within one family only.
    pub fn stored_prefix(&self, prefix: String) -> String {
        if prefix.is_empty() || (matches!(self.ip_mode, IpMode::Full | IpMode::Truncated) && !self.seal_ip) {
            prefix
        } else {
            let family = if prefix.contains(':') { 6 } else { 4 };
            format!("p{family}-{}", self.hash(&prefix))
        }
    }

    /// The address `auth_failure_burst` counts by (see [`burst_address`]), reduced like
    /// [`Self::stored_prefix`]: a keyed hash of the day when addresses are not kept in the
    /// clear; `None` with `ip_mode = "none"`.
    pub fn burst_address(&self, ip: IpAddr, ts_ms: i64) -> Option<String> {
        let full = burst_address(ip);
        match self.ip_mode {
            IpMode::None => None,
            IpMode::Full if !self.seal_ip => Some(full),
            // The /24 (or /48) the analytics keep: never more than they do.
            IpMode::Truncated if !self.seal_ip => Some(address_prefix(ip)),
            _ => Some(format!("h:{}", self.hash(&format!("{}|{full}", Period::Day.label(ts_ms))))),
        }
    }

    /// Whether a request's consent signals ask for no per-session detail.
    pub fn opted_out(&self, gpc: bool, dnt: bool) -> bool {
        (self.honor_gpc && gpc) || (self.honor_dnt && dnt)
    }

    fn hash(&self, text: &str) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.hash_key).expect("HMAC takes any key length");
        mac.update(text.as_bytes());
        hex::encode(&mac.finalize().into_bytes()[..8])
    }
}

/// The client address prefix a fingerprint keeps: /24 for IPv4, /48 for IPv6.
pub fn address_prefix(ip: IpAddr) -> String {
    match ip.to_canonical() {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            format!("{a}.{b}.{c}.0/24")
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}::/48", s[0], s[1], s[2])
        }
    }
}

/// The address `auth_failure_burst` counts by: the IPv4 address, or the IPv6 /64 (one host
/// holds a whole /64 and can pick any address in it).
pub fn burst_address(ip: IpAddr) -> String {
    match ip.to_canonical() {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
    }
}

/// IPv4 /24, IPv6 /48 (the rest zeroed).
fn truncate(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            IpAddr::from([a, b, c, 0])
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::from([s[0], s[1], s[2], 0, 0, 0, 0, 0])
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(mode: IpMode) -> Privacy {
        Privacy { ip_mode: mode, hash_key: b"k".to_vec(), ..Privacy::plain() }
    }

    #[test]
    fn prefixes_are_slash_24_and_slash_48() {
        assert_eq!(address_prefix("81.2.69.77".parse().unwrap()), "81.2.69.0/24");
        assert_eq!(address_prefix("::ffff:81.2.69.77".parse().unwrap()), "81.2.69.0/24");
        assert_eq!(address_prefix("2001:db8:abcd:12::1".parse().unwrap()), "2001:db8:abcd::/48");
    }

    #[test]
    fn address_modes() {
        let ip: IpAddr = "81.2.69.77".parse().unwrap();
        let v6: IpAddr = "2001:db8:abcd:12::1".parse().unwrap();
        let day1 = 1_764_000_000_000;
        assert_eq!(with(IpMode::Full).stored_ip(Some(ip), day1), "81.2.69.77");
        assert_eq!(with(IpMode::Truncated).stored_ip(Some(ip), day1), "81.2.69.0");
        assert_eq!(with(IpMode::Truncated).stored_ip(Some(v6), day1), "2001:db8:abcd::");
        assert_eq!(with(IpMode::Truncated).stored_ip(Some("::ffff:81.2.69.77".parse().unwrap()), day1), "81.2.69.0");
        assert_eq!(with(IpMode::None).stored_ip(Some(ip), day1), "");
        let p = with(IpMode::Hashed);
        let h = p.stored_ip(Some(ip), day1);
        assert!(h.starts_with("h:") && h.len() == 18 && !h.contains("81.2"), "{h}");
        assert_eq!(h, p.stored_ip(Some(ip), day1 + 1000), "stable within a day");
        assert_ne!(h, p.stored_ip(Some(ip), day1 + 86_400_000), "rotates daily");
        assert_ne!(h, with(IpMode::Hashed).stored_ip(Some("81.2.69.78".parse().unwrap()), day1));
    }

    #[test]
    fn prefixes_are_kept_or_hashed_stably() {
        assert_eq!(with(IpMode::Full).stored_prefix("81.2.69.0/24".into()), "81.2.69.0/24");
        let p = with(IpMode::None);
        let a = p.stored_prefix("81.2.69.0/24".into());
        assert!(a.starts_with("p4-") && !a.contains(':') && a == p.stored_prefix("81.2.69.0/24".into()));
        assert_ne!(a, p.stored_prefix("81.2.70.0/24".into()));
        assert!(p.stored_prefix("2001:db8:abcd::/48".into()).starts_with("p6-"));
        assert_eq!(p.burst_address("81.2.69.7".parse().unwrap(), 0), None);
        assert_eq!(with(IpMode::Truncated).burst_address("81.2.69.7".parse().unwrap(), 0).as_deref(), Some("81.2.69.0/24"));
    }

    #[test]
    fn consent_signals_follow_the_settings() {
        let p = Privacy { honor_gpc: true, ..Privacy::plain() };
        assert!(p.opted_out(true, false));
        assert!(!p.opted_out(false, true), "DNT not honoured unless set");
    }
}
