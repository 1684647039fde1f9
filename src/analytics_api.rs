//! The analytics REST API under `/api/analytics/`, answered by the proxy itself and never
//! forwarded to the app. Reads Redis with bounded work per request (no `KEYS`, no scans). I/O.

use subtle::ConstantTimeEq;

use crate::analytics_queries::{answer, QueryError};
use crate::config::AnalyticsSection;
use crate::identity::Identity;
use crate::keys::Period;
use crate::local_response::LocalResponse;
use crate::store::RedisStore;

/// Largest `limit` a list endpoint accepts.
pub const MAX_LIMIT: usize = 500;

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

/// A routed API request.
#[derive(Debug, PartialEq, Eq)]
pub enum Endpoint<'a> {
    ActiveSessions,
    SessionStats,
    UserSessions {
        user_id: &'a str,
    },
    Session {
        sid: &'a str,
    },
    TopPages,
    Devices,
    Geo,
    Durations,
    Timeseries,
    RecentSessions,
    PeakHours,
    OpenApi,
    /// Server-Sent Events of the active count (served by `own_endpoints`, not a query).
    ActiveStream,
}

/// This API's OpenAPI 3.1 description, served at `openapi.yaml` under the prefix.
pub const OPENAPI_YAML: &str = include_str!("../docs/openapi.yaml");

/// Why a request is not a valid API call.
#[derive(Debug, PartialEq, Eq)]
pub enum ApiError {
    NotFound,
    MethodNotAllowed,
    BadParameter { parameter: &'static str, message: String },
}

impl ApiError {
    pub fn response(&self) -> LocalResponse {
        match self {
            ApiError::NotFound => LocalResponse::json(404, serde_json::json!({"error": "not_found", "message": "no such analytics endpoint"})),
            ApiError::MethodNotAllowed => LocalResponse::json(405, serde_json::json!({"error": "method_not_allowed", "message": "only GET is supported"})),
            ApiError::BadParameter { parameter, message } => {
                LocalResponse::json(400, serde_json::json!({"error": "invalid_parameter", "parameter": parameter, "message": message}))
            }
        }
    }
}

/// Maps the path below the API prefix to an endpoint. Pure.
pub fn route<'a>(method: &str, rest: &'a str) -> Result<Endpoint<'a>, ApiError> {
    let segs: Vec<&str> = rest.trim_matches('/').split('/').collect();
    let ep = match segs.as_slice() {
        ["sessions"] => Endpoint::RecentSessions,
        ["sessions", "active"] => Endpoint::ActiveSessions,
        ["sessions", "stats"] => Endpoint::SessionStats,
        ["users", user_id, "sessions"] if valid_id(user_id) => Endpoint::UserSessions { user_id },
        ["sessions", "durations"] => Endpoint::Durations,
        ["sessions", sid] if valid_id(sid) => Endpoint::Session { sid },
        ["pages", "top"] => Endpoint::TopPages,
        ["devices"] => Endpoint::Devices,
        ["geo"] => Endpoint::Geo,
        ["timeseries"] => Endpoint::Timeseries,
        ["activity", "peak-hours"] => Endpoint::PeakHours,
        ["openapi.yaml"] => Endpoint::OpenApi,
        ["stream", "active"] => Endpoint::ActiveStream,
        _ => return Err(ApiError::NotFound),
    };
    if method != "GET" && method != "HEAD" {
        return Err(ApiError::MethodNotAllowed);
    }
    Ok(ep)
}

/// Ids as they appear in our keys: no `:` (that would address another key), no wildcards.
pub fn valid_id(s: &str) -> bool {
    !s.is_empty() && s.len() <= 256 && s.bytes().all(|b| b.is_ascii_graphic() && !b"*?[]:".contains(&b))
}

pub fn param(query: Option<&str>, name: &str) -> Option<String> {
    query.into_iter().flat_map(|q| form_urlencoded::parse(q.as_bytes())).find(|(k, _)| k == name).map(|(_, v)| v.into_owned())
}

/// `limit` from a query string: default 50, 1..=MAX_LIMIT.
pub fn parse_limit(query: Option<&str>) -> Result<usize, ApiError> {
    parse_limit_or(query, 50)
}

pub fn parse_limit_or(query: Option<&str>, default: usize) -> Result<usize, ApiError> {
    match param(query, "limit") {
        None => Ok(default),
        Some(v) => match v.parse::<usize>() {
            Ok(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
            _ => Err(ApiError::BadParameter { parameter: "limit", message: format!("must be a whole number from 1 to {MAX_LIMIT}") }),
        },
    }
}

/// The start of the day (`YYYY-MM-DD`) or hour (`YYYY-MM-DDTHH`) a label names, UTC. Strict:
/// `2026-1-5` or padded spellings are refused, so an answer's label is always the key's.
pub fn parse_label(period: Period, v: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    let t = match period {
        Period::Hour if v.len() == 13 => chrono::NaiveDateTime::parse_from_str(&format!("{v}:00"), "%Y-%m-%dT%H:%M").ok(),
        Period::Day if v.len() == 10 => chrono::NaiveDate::parse_from_str(v, "%Y-%m-%d").ok().and_then(|d| d.and_hms_opt(0, 0, 0)),
        _ => None,
    }?
    .and_utc();
    (period.label(t.timestamp_millis()) == v).then_some(t)
}

fn label_shape(period: Period) -> &'static str {
    match period {
        Period::Day => "YYYY-MM-DD",
        Period::Hour => "YYYY-MM-DDTHH",
    }
}

/// `period=day|hour` (default day) and `date` (`YYYY-MM-DD` or `YYYY-MM-DDTHH`, default now),
/// checked, as the key label.
pub fn parse_period(query: Option<&str>) -> Result<(Period, String), ApiError> {
    let period = match param(query, "period").as_deref() {
        None | Some("day") => Period::Day,
        Some("hour") => Period::Hour,
        Some(_) => return Err(ApiError::BadParameter { parameter: "period", message: "must be \"day\" or \"hour\"".into() }),
    };
    let label = match param(query, "date") {
        None => period.label(chrono::Utc::now().timestamp_millis()),
        Some(d) => match parse_label(period, &d) {
            Some(t) => period.label(t.timestamp_millis()),
            None => return Err(ApiError::BadParameter { parameter: "date", message: format!("must be {} (UTC)", label_shape(period)) }),
        },
    };
    Ok((period, label))
}

/// Most points one timeseries answer may hold.
pub const MAX_POINTS: usize = 744;

/// The period labels from `from` to `to` (inclusive), by granularity; defaults: the last 24
/// hours or the last 30 days.
pub fn timeseries_labels(query: Option<&str>) -> Result<(Period, Vec<String>), ApiError> {
    let granularity = match param(query, "granularity").as_deref() {
        None | Some("hour") => Period::Hour,
        Some("day") => Period::Day,
        Some(_) => return Err(ApiError::BadParameter { parameter: "granularity", message: "must be \"hour\" or \"day\"".into() }),
    };
    let step = match granularity {
        Period::Hour => chrono::Duration::hours(1),
        Period::Day => chrono::Duration::days(1),
    };
    let parse = |name: &'static str, v: String| {
        parse_label(granularity, &v).ok_or(ApiError::BadParameter { parameter: name, message: format!("must be {} (UTC)", label_shape(granularity)) })
    };
    let now = chrono::Utc::now();
    let to = match param(query, "to") {
        Some(v) => parse("to", v)?,
        None => now,
    };
    let from = match param(query, "from") {
        Some(v) => parse("from", v)?,
        None => to - step * if granularity == Period::Hour { 23 } else { 29 },
    };
    if from > to {
        return Err(ApiError::BadParameter { parameter: "from", message: "must not be after `to`".into() });
    }
    let mut labels = Vec::new();
    let mut t = from;
    while t <= to {
        if labels.len() == MAX_POINTS {
            return Err(ApiError::BadParameter { parameter: "from", message: format!("range holds more than {MAX_POINTS} points") });
        }
        labels.push(granularity.label(t.timestamp_millis()));
        t += step;
    }
    Ok((granularity, labels))
}

/// Answers one endpoint from Redis (the same reads as the ops CLI).
pub async fn serve(store: &RedisStore, ep: Endpoint<'_>, query: Option<&str>) -> LocalResponse {
    if ep == Endpoint::OpenApi {
        return LocalResponse::static_body(200, "application/yaml", OPENAPI_YAML);
    }
    match answer(store, &ep, query).await {
        Ok(v) => LocalResponse::json(200, v),
        Err(QueryError::Api(e)) => e.response(),
        Err(QueryError::NotFound(what)) => LocalResponse::json(404, serde_json::json!({"error": "not_found", "message": what})),
        Err(QueryError::Store(e)) => {
            let mut r = LocalResponse::json(503, serde_json::json!({"error": "store_unavailable", "message": e.to_string()}));
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

    #[test]
    fn routes_and_parameters() {
        assert_eq!(route("GET", "sessions/active"), Ok(Endpoint::ActiveSessions));
        assert_eq!(route("GET", "/sessions/stats/"), Ok(Endpoint::SessionStats));
        assert_eq!(route("GET", "users/u1/sessions"), Ok(Endpoint::UserSessions { user_id: "u1" }));
        assert_eq!(route("GET", "sessions/abc"), Ok(Endpoint::Session { sid: "abc" }));
        assert_eq!(route("POST", "sessions/active"), Err(ApiError::MethodNotAllowed));
        assert_eq!(route("GET", "users/a:b/sessions"), Err(ApiError::NotFound));
        assert_eq!(route("GET", "nope"), Err(ApiError::NotFound));
        assert_eq!(route("GET", "pages/top"), Ok(Endpoint::TopPages));
        assert_eq!(route("GET", "sessions/durations"), Ok(Endpoint::Durations));
        let (g, labels) = timeseries_labels(Some("granularity=day&from=2026-11-28&to=2026-11-30")).unwrap();
        assert_eq!((g, labels), (Period::Day, vec!["2026-11-28".to_string(), "2026-11-29".into(), "2026-11-30".into()]));
        assert_eq!(timeseries_labels(None).unwrap().1.len(), 24);
        for (q, p) in [
            ("granularity=week", "granularity"),
            ("from=2026-11-30T10&to=2026-11-30T09", "from"),
            ("granularity=day&from=2020-01-01", "from"),
            ("to=soon", "to"),
        ] {
            assert!(matches!(timeseries_labels(Some(q)), Err(ApiError::BadParameter { parameter, .. }) if parameter == p), "{q}");
        }
        assert_eq!(parse_period(Some("period=hour&date=2026-11-30T13")), Ok((Period::Hour, "2026-11-30T13".into())));
        assert_eq!(parse_period(Some("date=2026-11-30")), Ok((Period::Day, "2026-11-30".into())));
        for (q, p) in [
            ("period=week", "period"),
            ("date=2026-13-01", "date"),
            ("period=hour&date=2026-11-30", "date"),
            ("date=x", "date"),
            ("date=2026-1-5", "date"),
            ("date=%202026-11-3", "date"),
            ("period=hour&date=2026-11-30T1", "date"),
        ] {
            assert!(matches!(parse_period(Some(q)), Err(ApiError::BadParameter { parameter, .. }) if parameter == p), "{q}");
        }
        assert_eq!(parse_limit(None), Ok(50));
        assert_eq!(parse_limit(Some("limit=3&x=1")), Ok(3));
        for bad in ["limit=0", "limit=501", "limit=abc", "limit=-1"] {
            assert!(matches!(parse_limit(Some(bad)), Err(ApiError::BadParameter { parameter: "limit", .. })), "{bad}");
        }
    }
}
