//! Who is calling: the identity the proxy established for one request, and how it was
//! established. Pure data; no I/O.

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
    /// When the Kratos session last authenticated (unix seconds): a step-up must be newer than
    /// the anomaly that asked for it. None for Flask sessions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authenticated_at: Option<i64>,
}

/// How the identity (or its absence) was established; one label per request for metrics/logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AuthOutcome {
    /// No credential of any kind.
    #[default]
    Anonymous,
    FlaskCacheHit,
    FlaskRedisHit,
    /// A live Flask session without a user.
    FlaskAnonymousSession,
    /// Signed sid whose Redis key is gone.
    FlaskSessionMissing,
    BadSignature,
    UndecodableSession,
    StoreDown,
    KratosCacheHit,
    KratosCall,
    KratosUnauthenticated,
    KratosAal2Required,
    KratosUnavailable,
    /// An unknown Kratos credential from a client over its lookup limit.
    KratosRateLimited,
    /// A session revoked through the API: refused like a missing one.
    Revoked,
    /// A session held until it authenticates again with a second factor
    /// (`security.actions` = `step_up`).
    StepUpRequired,
}

impl crate::observe::metrics::FixedLabel for AuthOutcome {
    fn index(self) -> usize {
        self as usize
    }

    fn as_str(self) -> &'static str {
        AuthOutcome::as_str(self)
    }
}

impl AuthOutcome {
    pub fn as_str(self) -> &'static str {
        use AuthOutcome::*;
        match self {
            Anonymous => "anonymous",
            FlaskCacheHit => "flask_cache_hit",
            FlaskRedisHit => "flask_redis_hit",
            FlaskAnonymousSession => "flask_anonymous_session",
            FlaskSessionMissing => "flask_session_missing",
            BadSignature => "bad_signature",
            UndecodableSession => "undecodable_session",
            StoreDown => "store_down",
            KratosCacheHit => "kratos_cache_hit",
            KratosCall => "kratos_call",
            KratosUnauthenticated => "kratos_unauthenticated",
            KratosAal2Required => "kratos_aal2_required",
            KratosUnavailable => "kratos_unavailable",
            KratosRateLimited => "kratos_rate_limited",
            Revoked => "revoked",
            StepUpRequired => "step_up_required",
        }
    }
}
