//! Privacy settings: how client addresses are kept, which personal fields are encrypted at
//! rest, and which consent signals are honoured. Pure.

use serde::Deserialize;

/// How a client address is kept in analytics (and, through `server.access_log_ip`, in the
/// access log). Geo lookups and the anomaly detectors' /24 and /48 prefixes use the full address
/// before it is reduced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum IpMode {
    /// The address as it is.
    #[default]
    Full,
    /// IPv4 /24 (`81.2.69.0`), IPv6 /48 (`2001:db8:abcd::`), as Matomo and GoAccess do.
    Truncated,
    /// A keyed hash rotated every UTC day (`h:` and 16 hex digits): one address's requests link
    /// within a day, not across days, and the address cannot be recovered without the key.
    Hashed,
    /// Not kept at all.
    None,
}

impl IpMode {
    /// `full`, `truncated`, `hashed` or `none`.
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "full" => Ok(IpMode::Full),
            "truncated" => Ok(IpMode::Truncated),
            "hashed" => Ok(IpMode::Hashed),
            "none" => Ok(IpMode::None),
            other => Err(format!("{other:?} is not full, truncated, hashed or none")),
        }
    }
}

/// Checks Fernet keys (url-safe base64 of 32 bytes); the error names the key by position, never
/// its value.
pub fn check_keys<'a>(keys: impl IntoIterator<Item = &'a str>) -> Result<(), String> {
    match keys.into_iter().position(|k| fernet::Fernet::new(k.trim()).is_none()) {
        Some(i) => Err(format!("key {} is not a Fernet key (url-safe base64 of 32 bytes, as Fernet.generate_key() makes)", i + 1)),
        None => Ok(()),
    }
}

/// The personal fields `analytics.encrypted_fields` may name.
pub const ENCRYPTABLE_FIELDS: &[&str] = &["email", "ip_address", "user_agent"];

/// The seed's encrypted fields, the default.
pub fn default_encrypted_fields() -> Vec<String> {
    ["email", "ip_address", "user_agent"].iter().map(|s| (*s).to_owned()).collect()
}

/// The first field `analytics.encrypted_fields` names that cannot be encrypted.
pub fn unknown_field(fields: &[String]) -> Option<&str> {
    fields.iter().map(String::as_str).find(|f| !ENCRYPTABLE_FIELDS.contains(f))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_parse_and_fields_are_checked() {
        assert_eq!(IpMode::parse("truncated"), Ok(IpMode::Truncated));
        assert!(IpMode::parse("anonymous").unwrap_err().contains("anonymous"));
        assert_eq!(unknown_field(&default_encrypted_fields()), None);
        assert_eq!(unknown_field(&["email".into(), "password".into()]), Some("password"));
    }
}
