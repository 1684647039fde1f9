//! The analytics REST API under `/api/analytics/`, answered by the proxy itself and never
//! forwarded to the app. Reads Redis with bounded work per request (no `KEYS`, no scans). I/O.

use std::collections::HashMap;

use subtle::ConstantTimeEq;

use crate::config::AnalyticsSection;
use crate::identity::Identity;
use crate::keys::{self, Period};
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
        let Some(token) = authorization.and_then(|a| a.strip_prefix("Bearer ").or_else(|| a.strip_prefix("bearer "))) else {
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
    UserSessions { user_id: &'a str },
    Session { sid: &'a str },
    TopPages,
    Devices,
    Geo,
    Durations,
    Timeseries,
}

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
        ["sessions", "active"] => Endpoint::ActiveSessions,
        ["sessions", "stats"] => Endpoint::SessionStats,
        ["users", user_id, "sessions"] if valid_id(user_id) => Endpoint::UserSessions { user_id },
        ["sessions", "durations"] => Endpoint::Durations,
        ["sessions", sid] if valid_id(sid) => Endpoint::Session { sid },
        ["pages", "top"] => Endpoint::TopPages,
        ["devices"] => Endpoint::Devices,
        ["geo"] => Endpoint::Geo,
        ["timeseries"] => Endpoint::Timeseries,
        _ => return Err(ApiError::NotFound),
    };
    if method != "GET" && method != "HEAD" {
        return Err(ApiError::MethodNotAllowed);
    }
    Ok(ep)
}

/// Ids as they appear in our keys: no `:` (that would address another key), no wildcards.
fn valid_id(s: &str) -> bool {
    !s.is_empty() && s.len() <= 256 && s.bytes().all(|b| b.is_ascii_graphic() && !b"*?[]:".contains(&b))
}

fn param(query: Option<&str>, name: &str) -> Option<String> {
    query.into_iter().flat_map(|q| form_urlencoded::parse(q.as_bytes())).find(|(k, _)| k == name).map(|(_, v)| v.into_owned())
}

/// `limit` from a query string: default 50, 1..=MAX_LIMIT.
pub fn parse_limit(query: Option<&str>) -> Result<usize, ApiError> {
    parse_limit_or(query, 50)
}

fn parse_limit_or(query: Option<&str>, default: usize) -> Result<usize, ApiError> {
    match param(query, "limit") {
        None => Ok(default),
        Some(v) => match v.parse::<usize>() {
            Ok(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
            _ => Err(ApiError::BadParameter { parameter: "limit", message: format!("must be a whole number from 1 to {MAX_LIMIT}") }),
        },
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
        Some(d) => {
            let ok = match period {
                Period::Day => chrono::NaiveDate::parse_from_str(&d, "%Y-%m-%d").is_ok(),
                Period::Hour => chrono::NaiveDateTime::parse_from_str(&format!("{d}:00"), "%Y-%m-%dT%H:%M").is_ok() && d.len() == 13,
            };
            if !ok {
                let shape = if period == Period::Day { "YYYY-MM-DD" } else { "YYYY-MM-DDTHH" };
                return Err(ApiError::BadParameter { parameter: "date", message: format!("must be {shape} (UTC)") });
            }
            d
        }
    };
    Ok((period, label))
}

/// Most points one timeseries answer may hold.
pub const MAX_POINTS: usize = 744;

/// Metrics a timeseries can show, and the analytics-hash field behind each (None = the HLL).
fn timeseries_field(metric: &str) -> Option<Option<&'static str>> {
    Some(match metric {
        "page_views" => Some("page_views"),
        "sessions_started" => Some("sessions_started"),
        "hits" => Some("hits"),
        "errors" => Some("errors"),
        "unique_users" => None,
        _ => return None,
    })
}

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
    let parse = |name: &'static str, v: String| -> Result<chrono::DateTime<chrono::Utc>, ApiError> {
        let t = match granularity {
            Period::Hour => chrono::NaiveDateTime::parse_from_str(&format!("{v}:00"), "%Y-%m-%dT%H:%M").ok().filter(|_| v.len() == 13),
            Period::Day => chrono::NaiveDate::parse_from_str(&v, "%Y-%m-%d").ok().and_then(|d| d.and_hms_opt(0, 0, 0)),
        };
        let shape = if granularity == Period::Day { "YYYY-MM-DD" } else { "YYYY-MM-DDTHH" };
        t.map(|t| t.and_utc()).ok_or(ApiError::BadParameter { parameter: name, message: format!("must be {shape} (UTC)") })
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

/// `[{"name": member, "count": n}, ...]` from a `ZREVRANGE ... WITHSCORES` reply.
fn ranked(rows: Vec<(String, f64)>) -> serde_json::Value {
    serde_json::json!(rows.into_iter().map(|(name, n)| serde_json::json!({"name": name, "count": n as i64})).collect::<Vec<_>>())
}

fn iso(ms: Option<i64>) -> serde_json::Value {
    match ms.and_then(chrono::DateTime::from_timestamp_millis) {
        Some(t) => serde_json::json!(t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
        None => serde_json::Value::Null,
    }
}

fn now_iso() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// A session record in the API's shape (the seed's fields, and a few more).
pub fn session_json(sid: &str, rec: &HashMap<String, String>) -> serde_json::Value {
    let get = |k: &str| rec.get(k).filter(|v| !v.is_empty()).cloned();
    let num = |k: &str| rec.get(k).and_then(|v| v.parse::<i64>().ok());
    let device = get("device");
    serde_json::json!({
        "session_id": sid,
        "user_id": get("user_id"),
        "email": get("email"),
        "start_time": iso(num("start_time")),
        "last_activity": iso(num("last_time")),
        "end_time": iso(num("end_time")),
        "end_reason": get("end_reason"),
        "duration": num("duration"),
        "page_views": num("page_views").unwrap_or(0),
        "hits": num("hits").unwrap_or(0),
        "ip_address": get("ip"),
        "location": {"country": get("country"), "city": get("city")},
        "device": {
            "os": get("os"),
            "browser": get("browser"),
            "type": device,
            "mobile": matches!(rec.get("device").map(String::as_str), Some("mobile") | Some("tablet")),
        },
        "auth_source": get("auth_source"),
        "aal": get("aal"),
    })
}

/// Answers one endpoint from Redis.
pub async fn serve(store: &RedisStore, ep: Endpoint<'_>, query: Option<&str>) -> LocalResponse {
    match answer(store, ep, query).await {
        Ok(r) => r,
        Err(AnswerError::Api(e)) => e.response(),
        Err(AnswerError::Store(e)) => {
            let mut r = LocalResponse::json(503, serde_json::json!({"error": "store_unavailable", "message": e.to_string()}));
            r.retry_after = Some(5);
            r
        }
    }
}

enum AnswerError {
    Api(ApiError),
    Store(crate::store::StoreError),
}

impl From<crate::store::StoreError> for AnswerError {
    fn from(e: crate::store::StoreError) -> Self {
        AnswerError::Store(e)
    }
}

async fn answer(store: &RedisStore, ep: Endpoint<'_>, query: Option<&str>) -> Result<LocalResponse, AnswerError> {
    let ok = |v: serde_json::Value| LocalResponse::json(200, v);
    match ep {
        Endpoint::ActiveSessions => {
            let n: i64 = store.query(redis::cmd("SCARD").arg(keys::ACTIVE_SESSIONS)).await?;
            Ok(ok(serde_json::json!({"active_sessions": n, "timestamp": now_iso()})))
        }
        Endpoint::SessionStats => {
            let day = Period::Day.label(chrono::Utc::now().timestamp_millis());
            let (counters, users, active): (HashMap<String, i64>, i64, i64) = store
                .pipeline(
                    redis::pipe()
                        .hgetall(keys::analytics_period(Period::Day, &day))
                        .cmd("PFCOUNT")
                        .arg(keys::analytics_unique_users(Period::Day, &day))
                        .scard(keys::ACTIVE_SESSIONS),
                )
                .await?;
            let c = |k: &str| counters.get(k).copied().unwrap_or(0);
            let ended = c("sessions_ended");
            let avg_minutes = if ended > 0 { c("duration_total_s") as f64 / ended as f64 / 60.0 } else { 0.0 };
            Ok(ok(serde_json::json!({
                "total_sessions_today": c("sessions_started"),
                "average_duration_minutes": (avg_minutes * 100.0).round() / 100.0,
                "unique_users_today": users,
                "active_sessions": active,
                "sessions_ended_today": ended,
                "page_views_today": c("page_views"),
                "hits_today": c("hits"),
                "date": day,
                "timestamp": now_iso(),
            })))
        }
        Endpoint::UserSessions { user_id } => {
            let limit = parse_limit(query).map_err(AnswerError::Api)?;
            let key = keys::user_sessions(user_id);
            let (sids, total): (Vec<String>, i64) =
                store.pipeline(redis::pipe().zrevrange(&key, 0, limit as isize - 1).zcard(&key)).await?;
            let mut pipe = redis::pipe();
            for sid in &sids {
                pipe.hgetall(keys::analytics_session(sid));
            }
            let records: Vec<HashMap<String, String>> = if sids.is_empty() { Vec::new() } else { store.pipeline(&pipe).await? };
            let sessions: Vec<serde_json::Value> = sids.iter().zip(&records).map(|(sid, rec)| session_json(sid, rec)).collect();
            Ok(ok(serde_json::json!({"user_id": user_id, "sessions": sessions, "total_count": total})))
        }
        Endpoint::TopPages | Endpoint::Devices | Endpoint::Geo => {
            let (period, label) = parse_period(query).map_err(AnswerError::Api)?;
            let limit = parse_limit_or(query, 10).map_err(AnswerError::Api)?;
            let dims: &[&str] = match ep {
                Endpoint::TopPages => &["pages"],
                Endpoint::Devices => &["browsers", "os", "devices"],
                _ => &["countries", "cities"],
            };
            let mut pipe = redis::pipe();
            for d in dims {
                pipe.zrevrange_withscores(keys::analytics_breakdown(period, &label, d), 0, limit as isize - 1);
            }
            let rows: Vec<Vec<(String, f64)>> = store.pipeline(&pipe).await?;
            let mut body = serde_json::json!({"period": if period == Period::Day { "day" } else { "hour" }, "date": label});
            for (d, r) in dims.iter().zip(rows) {
                let name = if *d == "devices" { "device_types" } else { d };
                body[name] = ranked(r);
            }
            if let Some(types) = body.get("device_types").and_then(|v| v.as_array()) {
                let bots = types.iter().find(|t| t["name"] == "bot").map(|t| t["count"].clone()).unwrap_or(serde_json::json!(0));
                body["bots"] = bots;
            }
            Ok(ok(body))
        }
        Endpoint::Durations => {
            let (period, label) = parse_period(query).map_err(AnswerError::Api)?;
            let h: HashMap<String, i64> = store.query(redis::cmd("HGETALL").arg(keys::analytics_period(period, &label))).await?;
            let ended = h.get("sessions_ended").copied().unwrap_or(0);
            let total = h.get("duration_total_s").copied().unwrap_or(0);
            let mut buckets: Vec<(Option<u64>, i64)> = crate::session_scripts::DURATION_BUCKETS
                .iter()
                .map(|b| (Some(*b), h.get(&format!("duration_le_{b}")).copied().unwrap_or(0)))
                .collect();
            buckets.push((None, h.get("duration_gt_max").copied().unwrap_or(0)));
            // The median lies in the first bucket whose running count reaches half the sessions.
            let mut running = 0;
            let median = buckets.iter().find_map(|(le, n)| {
                running += n;
                (ended > 0 && running * 2 >= ended).then_some(*le)
            });
            Ok(ok(serde_json::json!({
                "period": if period == Period::Day { "day" } else { "hour" },
                "date": label,
                "sessions_ended": ended,
                "average_seconds": if ended > 0 { total as f64 / ended as f64 } else { 0.0 },
                "median_le_seconds": median.flatten(),
                "buckets": buckets.iter().map(|(le, n)| serde_json::json!({"le_seconds": le, "count": n})).collect::<Vec<_>>(),
            })))
        }
        Endpoint::Timeseries => {
            let metric = param(query, "metric").unwrap_or_else(|| "page_views".into());
            let field = timeseries_field(&metric).ok_or(AnswerError::Api(ApiError::BadParameter {
                parameter: "metric",
                message: "must be page_views, sessions_started, unique_users, hits or errors".into(),
            }))?;
            let (granularity, labels) = timeseries_labels(query).map_err(AnswerError::Api)?;
            let mut pipe = redis::pipe();
            for l in &labels {
                match field {
                    Some(f) => pipe.hget(keys::analytics_period(granularity, l), f),
                    None => pipe.cmd("PFCOUNT").arg(keys::analytics_unique_users(granularity, l)),
                };
            }
            let values: Vec<Option<i64>> = store.pipeline(&pipe).await?;
            let points: Vec<serde_json::Value> =
                labels.iter().zip(values).map(|(l, v)| serde_json::json!({"t": l, "value": v.unwrap_or(0)})).collect();
            Ok(ok(serde_json::json!({
                "metric": metric,
                "granularity": if granularity == Period::Day { "day" } else { "hour" },
                "points": points,
            })))
        }
        Endpoint::Session { sid } => {
            let (rec, actions): (HashMap<String, String>, Vec<String>) = store
                .pipeline(redis::pipe().hgetall(keys::analytics_session(sid)).lrange(keys::session_actions(sid), 0, 99))
                .await?;
            if rec.is_empty() {
                return Ok(LocalResponse::json(404, serde_json::json!({"error": "not_found", "message": "no such session"})));
            }
            let actions: Vec<serde_json::Value> = actions.iter().filter_map(|a| serde_json::from_str(a).ok()).collect();
            let mut body = session_json(sid, &rec);
            body["actions"] = serde_json::json!(actions);
            Ok(ok(body))
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
        for (q, p) in [("granularity=week", "granularity"), ("from=2026-11-30T10&to=2026-11-30T09", "from"), ("granularity=day&from=2020-01-01", "from"), ("to=soon", "to")] {
            assert!(matches!(timeseries_labels(Some(q)), Err(ApiError::BadParameter { parameter, .. }) if parameter == p), "{q}");
        }
        assert_eq!(parse_period(Some("period=hour&date=2026-11-30T13")), Ok((Period::Hour, "2026-11-30T13".into())));
        assert_eq!(parse_period(Some("date=2026-11-30")), Ok((Period::Day, "2026-11-30".into())));
        for (q, p) in [("period=week", "period"), ("date=2026-13-01", "date"), ("period=hour&date=2026-11-30", "date"), ("date=x", "date")] {
            assert!(matches!(parse_period(Some(q)), Err(ApiError::BadParameter { parameter, .. }) if parameter == p), "{q}");
        }
        assert_eq!(parse_limit(None), Ok(50));
        assert_eq!(parse_limit(Some("limit=3&x=1")), Ok(3));
        for bad in ["limit=0", "limit=501", "limit=abc", "limit=-1"] {
            assert!(matches!(parse_limit(Some(bad)), Err(ApiError::BadParameter { parameter: "limit", .. })), "{bad}");
        }
    }

    #[test]
    fn session_shape_has_the_seed_fields() {
        let rec: HashMap<String, String> = [("user_id", "u1"), ("start_time", "1796043900000"), ("device", "mobile"), ("os", "iPhone"), ("country", "GB")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        let j = session_json("s1", &rec);
        for f in ["session_id", "user_id", "start_time", "end_time", "duration", "page_views", "ip_address", "location", "device"] {
            assert!(j.get(f).is_some(), "{f}");
        }
        assert_eq!(j["start_time"], "2026-11-30T13:05:00.000Z");
        assert_eq!(j["device"]["mobile"], true);
        assert_eq!(j["location"]["country"], "GB");
    }
}
