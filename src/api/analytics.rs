//! The analytics REST API under `/api/analytics/`, answered by the proxy itself and never
//! forwarded to the app. Reads Redis with bounded work per request (no `KEYS`, no scans). I/O.

use subtle::ConstantTimeEq;

use crate::api::changes::Changes;
use crate::api::endpoint::{ApiError, Endpoint};
use crate::api::local_response::LocalResponse;
use crate::api::queries::{answer, QueryError};
use crate::config::AnalyticsSection;
use crate::identity::Identity;
use crate::store::RedisStore;

/// Who may read the API: an admin session, or a bearer token from `STING_ANALYTICS_TOKEN`.
pub struct ApiAccess {
    tokens: Vec<Vec<u8>>,
    admin_roles: Vec<String>,
    allowed_origins: Vec<String>,
}

/// The outcome of the access check.
#[derive(Debug, PartialEq, Eq)]
pub enum Access {
    Granted,
    /// No credential at all (401).
    Unauthenticated,
    /// A credential that does not allow this (403).
    Forbidden(&'static str),
}

impl ApiAccess {
    pub fn new(cfg: &AnalyticsSection) -> Self {
        Self {
            tokens: cfg.api_tokens.iter().map(|t| t.expose().as_bytes().to_vec()).collect(),
            admin_roles: cfg.admin_roles.clone(),
            allowed_origins: cfg.allowed_origins.clone(),
        }
    }

    /// True when `Authorization: Bearer <token>` carries one of the configured tokens. Each
    /// comparison is constant-time, and every configured token is compared.
    pub fn bearer_matches(&self, authorization: Option<&str>) -> bool {
        // The scheme is case-insensitive (RFC 9110 §11.1).
        let Some(token) = authorization.and_then(|a| a.get(..7).filter(|s| s.eq_ignore_ascii_case("bearer ")).map(|_| &a[7..])) else {
            return false;
        };
        let token = token.trim().as_bytes();
        self.tokens.iter().fold(false, |found, t| found | bool::from(t.as_slice().ct_eq(token)))
    }

    /// Cross-origin browser requests are refused unless their origin is configured; requests
    /// without `Origin` (scripts, same-origin navigations) pass this check.
    pub fn origin_allowed(&self, origin: Option<&str>, host: Option<&str>) -> bool {
        match origin {
            None => true,
            Some(o) => {
                let same = host.is_some_and(|h| o.strip_prefix("http://").or_else(|| o.strip_prefix("https://")) == Some(h));
                same || self.allowed_origins.iter().any(|a| a == o)
            }
        }
    }

    pub fn check(&self, bearer_ok: bool, identity: Option<&Identity>) -> Access {
        if bearer_ok {
            return Access::Granted;
        }
        match identity {
            None => Access::Unauthenticated,
            Some(id) if id.role.as_ref().is_some_and(|r| self.admin_roles.contains(r)) => Access::Granted,
            Some(_) => Access::Forbidden("an admin role is required"),
        }
    }
}

/// This API's OpenAPI 3.1 description, served at `openapi.yaml` under the prefix.
pub const OPENAPI_YAML: &str = include_str!("../../docs/openapi.yaml");

/// Answers one endpoint from Redis (the same reads as the ops CLI); `format=csv` asks for the
/// answer as a CSV table (see [`crate::api::csv`]).
pub async fn serve(store: &RedisStore, ep: Endpoint<'_>, query: Option<&str>) -> LocalResponse {
    if ep == Endpoint::OpenApi {
        return LocalResponse::static_body(200, "application/yaml", OPENAPI_YAML);
    }
    let csv = match crate::api::endpoint::param(query, "format").as_deref() {
        None | Some("json") => false,
        Some("csv") => true,
        Some(_) => {
            return ApiError::BadParameter { parameter: "format", message: "must be \"json\" or \"csv\"".into() }.response();
        }
    };
    match answer(store, &ep, query).await {
        Ok(v) if csv => {
            let mut r = LocalResponse::json(200, serde_json::Value::Null);
            r.content_type = crate::api::csv::CONTENT_TYPE;
            r.body = bytes::Bytes::from(crate::api::csv::from_json(&v));
            r
        }
        other => respond(other),
    }
}

/// Makes the change an endpoint names, on behalf of `actor` (audited); `body` is the request's.
pub async fn change(changes: &Changes, ep: Endpoint<'_>, actor: &str, body: &[u8], query: Option<&str>) -> LocalResponse {
    respond(match ep {
        Endpoint::ExportUser { user_id } => changes.export_user(user_id, actor).await,
        Endpoint::EraseUser { user_id } => match crate::api::endpoint::parse_dry_run(query) {
            Ok(dry_run) => changes.erase_user(user_id, dry_run, actor).await,
            Err(e) => Err(QueryError::Api(e)),
        },
        Endpoint::RevokeSession { sid } => changes.revoke_session(sid, actor).await,
        Endpoint::RevokeUser { user_id } => changes.revoke_user(user_id, actor).await,
        Endpoint::ConfigureAlerts => changes.configure_alerts(body, actor).await,
        Endpoint::DefineFunnel => changes.define_funnel(body, actor).await,
        _ => Err(QueryError::NotFound("not a change")),
    })
}

fn respond(answer: Result<serde_json::Value, QueryError>) -> LocalResponse {
    match answer {
        Ok(v) => LocalResponse::json(200, v),
        Err(QueryError::Api(e)) => e.response(),
        Err(QueryError::NotFound(what)) => LocalResponse::json(404, serde_json::json!({"error": "not_found", "message": what})),
        Err(QueryError::Store(e)) => {
            // The Redis error (addresses, server messages) goes to the log, not to the client.
            tracing::warn!(error = %e, "analytics API: Redis unavailable");
            let mut r =
                LocalResponse::json(503, serde_json::json!({"error": "store_unavailable", "message": "the analytics store is unavailable; try again shortly"}));
            r.retry_after = Some(5);
            r
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;
    use crate::identity::AuthSource;

    fn access() -> ApiAccess {
        ApiAccess::new(&AnalyticsSection {
            api_tokens: vec![Secret::new("t0ken-one"), Secret::new("t0ken-two")],
            admin_roles: vec!["admin".into()],
            allowed_origins: vec!["https://ops.example.com".into()],
            ..AnalyticsSection::default()
        })
    }

    fn who(role: Option<&str>) -> Identity {
        Identity {
            user_id: "u".into(),
            email: None,
            role: role.map(str::to_owned),
            session_id: "s".into(),
            source: AuthSource::FlaskSession,
            aal: None,
            methods: vec![],
            authenticated_at: None,
        }
    }

    #[test]
    fn access_rules() {
        let a = access();
        assert!(a.bearer_matches(Some("Bearer t0ken-two")));
        assert!(a.bearer_matches(Some("BEARER t0ken-one")));
        assert!(!a.bearer_matches(Some("Bearer")));
        assert!(!a.bearer_matches(Some("Bearer t0ken")));
        assert!(!a.bearer_matches(Some("Basic t0ken-one")));
        assert!(!a.bearer_matches(None));
        assert_eq!(a.check(true, None), Access::Granted);
        assert_eq!(a.check(false, None), Access::Unauthenticated);
        assert_eq!(a.check(false, Some(&who(Some("user")))), Access::Forbidden("an admin role is required"));
        assert_eq!(a.check(false, Some(&who(Some("admin")))), Access::Granted);
        assert!(a.origin_allowed(None, Some("x")));
        assert!(a.origin_allowed(Some("http://proxy:8080"), Some("proxy:8080")));
        assert!(a.origin_allowed(Some("https://ops.example.com"), Some("proxy:8080")));
        assert!(!a.origin_allowed(Some("https://evil.example"), Some("proxy:8080")));
    }
}
