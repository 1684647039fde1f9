//! Who is calling: the identity the proxy established for one request. Pure data; no I/O.

use serde::{Deserialize, Serialize};

/// Where an identity came from; sent upstream as `X-Auth-Source`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AuthSource {
    FlaskSession,
    Kratos,
}

impl AuthSource {
    pub fn as_str(self) -> &'static str {
        match self {
            AuthSource::FlaskSession => "flask-session",
            AuthSource::Kratos => "kratos",
        }
    }
}

/// An authenticated caller. Shared behind an `Arc` by the caches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    pub user_id: String,
    pub email: Option<String>,
    pub role: Option<String>,
    /// The bare Flask sid or the Kratos session id; never a cookie or token.
    pub session_id: String,
    pub source: AuthSource,
    /// Kratos `authenticator_assurance_level` (`aal1`, `aal2`, ...); None for Flask sessions.
    pub aal: Option<String>,
    /// Kratos authentication methods (`password`, `totp`, ...), in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<String>,
}
