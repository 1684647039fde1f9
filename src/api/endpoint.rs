//! An analytics API request, shared by the HTTP API and the ops CLI: which endpoint a path
//! names, and its parameters checked (400s that name the parameter). Pure; no I/O.

use crate::api::local_response::LocalResponse;
use crate::store::keys::Period;

/// Largest `limit` a list endpoint accepts.
pub const MAX_LIMIT: usize = 500;

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
    /// `DELETE sessions/{id}`: revoke a session (a change: see [`Endpoint::is_change`]).
    RevokeSession {
        sid: &'a str,
    },
    /// `POST users/{id}/revoke`: revoke every active session of a user.
    RevokeUser {
        user_id: &'a str,
    },
    /// `GET audit`: the newest entries of the audit log of changes.
    Audit,
    /// `GET sessions/anomalies`: the day's detected anomalies.
    Anomalies,
    /// `GET sessions/replay/{id}`: a signed-in session's request timeline.
    Replay {
        sid: &'a str,
    },
    /// `GET users/{id}/behavior-patterns`: a user's usual hours, devices, countries, routes,
    /// session lengths and sessions across devices.
    UserBehavior {
        user_id: &'a str,
    },
    /// `GET sessions/online`: signed-in active sessions, newest activity first.
    Online,
    /// `GET sessions/alerts/configure`: the alert rules in force.
    AlertRules,
    /// `POST sessions/alerts/configure`: replace the alert rules (a change).
    ConfigureAlerts,
    /// `GET users/{id}/export`: every record about a user (audited, like a change).
    ExportUser {
        user_id: &'a str,
    },
    /// `DELETE users/{id}[?dry_run=true]`: erase everything about a user.
    EraseUser {
        user_id: &'a str,
    },
    /// `GET acquisition`: sessions and users by referrer domain and UTM tags.
    Acquisition,
    /// `GET funnels`: the funnels defined.
    Funnels,
    /// `POST funnels`: define a funnel (a change).
    DefineFunnel,
    /// `GET funnels/{name}`: sessions and users per step, in order, over a range.
    Funnel {
        name: &'a str,
    },
    /// `GET retention`: cohorts by first-seen day or week and the share active after.
    Retention,
}

impl Endpoint<'_> {
    /// Whether the endpoint changes state (revocations, alert rules, erasure) or hands out one
    /// user's personal data (export): it is audited, and with session-cookie access it needs the
    /// CSRF header.
    pub fn is_change(&self) -> bool {
        matches!(
            self,
            Endpoint::RevokeSession { .. }
                | Endpoint::RevokeUser { .. }
                | Endpoint::ConfigureAlerts
                | Endpoint::ExportUser { .. }
                | Endpoint::EraseUser { .. }
                | Endpoint::DefineFunnel
        )
    }
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
            ApiError::MethodNotAllowed => {
                LocalResponse::json(405, serde_json::json!({"error": "method_not_allowed", "message": "this endpoint does not take that method"}))
            }
            ApiError::BadParameter { parameter, message } => {
                LocalResponse::json(400, serde_json::json!({"error": "invalid_parameter", "parameter": parameter, "message": message}))
            }
        }
    }
}

/// Maps the method and the path below the API prefix to an endpoint. Pure.
pub fn route<'a>(method: &str, rest: &'a str) -> Result<Endpoint<'a>, ApiError> {
    let segs: Vec<&str> = rest.trim_matches('/').split('/').collect();
    let read = method == "GET" || method == "HEAD";
    let ep = match segs.as_slice() {
        ["sessions"] => Endpoint::RecentSessions,
        ["sessions", "active"] => Endpoint::ActiveSessions,
        ["sessions", "stats"] => Endpoint::SessionStats,
        ["users", user_id, "sessions"] if valid_id(user_id) => Endpoint::UserSessions { user_id },
        ["users", user_id, "revoke"] if valid_id(user_id) => Endpoint::RevokeUser { user_id },
        ["users", user_id, "export"] if valid_id(user_id) => Endpoint::ExportUser { user_id },
        ["users", user_id] if valid_id(user_id) => Endpoint::EraseUser { user_id },
        ["users", user_id, "behavior-patterns"] if valid_id(user_id) => Endpoint::UserBehavior { user_id },
        ["sessions", "online"] => Endpoint::Online,
        ["sessions", "durations"] => Endpoint::Durations,
        ["sessions", "anomalies"] => Endpoint::Anomalies,
        ["sessions", "replay", sid] if valid_id(sid) => Endpoint::Replay { sid },
        ["sessions", "alerts", "configure"] if method == "POST" => Endpoint::ConfigureAlerts,
        ["sessions", "alerts", "configure"] => Endpoint::AlertRules,
        ["sessions", sid] if valid_id(sid) && method == "DELETE" => Endpoint::RevokeSession { sid },
        ["sessions", sid] if valid_id(sid) => Endpoint::Session { sid },
        ["pages", "top"] => Endpoint::TopPages,
        ["devices"] => Endpoint::Devices,
        ["geo"] => Endpoint::Geo,
        ["timeseries"] => Endpoint::Timeseries,
        ["activity", "peak-hours"] => Endpoint::PeakHours,
        ["audit"] => Endpoint::Audit,
        ["acquisition"] => Endpoint::Acquisition,
        ["funnels"] if method == "POST" => Endpoint::DefineFunnel,
        ["funnels"] => Endpoint::Funnels,
        ["funnels", name] if crate::config::funnel::valid_name(name) => Endpoint::Funnel { name },
        ["retention"] => Endpoint::Retention,
        ["openapi.yaml"] => Endpoint::OpenApi,
        ["stream", "active"] => Endpoint::ActiveStream,
        _ => return Err(ApiError::NotFound),
    };
    let allowed = match ep {
        Endpoint::RevokeSession { .. } | Endpoint::EraseUser { .. } => method == "DELETE",
        // A full, audited export: not for HEAD.
        Endpoint::ExportUser { .. } => method == "GET",
        Endpoint::RevokeUser { .. } | Endpoint::ConfigureAlerts | Endpoint::DefineFunnel => method == "POST",
        _ => read,
    };
    if !allowed {
        return Err(ApiError::MethodNotAllowed);
    }
    Ok(ep)
}

/// The filters of `sessions/anomalies`: the UTC day, the lowest severity, one user.
#[derive(Debug, PartialEq, Eq)]
pub struct AnomalyQuery {
    /// 0 low, 1 medium, 2 high: anomalies at or above it.
    pub min_severity: u8,
    pub user: Option<String>,
    pub limit: usize,
}

/// The rank of a severity name (`low` < `medium` < `high`).
pub fn severity_rank(s: &str) -> Option<u8> {
    ["low", "medium", "high"].iter().position(|x| *x == s).map(|i| i as u8)
}

pub fn parse_anomaly_query(query: Option<&str>) -> Result<AnomalyQuery, ApiError> {
    let period = match param(query, "period").as_deref() {
        None | Some("day") => Period::Day,
        Some("hour") => Period::Hour,
        Some(_) => return Err(ApiError::BadParameter { parameter: "period", message: "must be \"day\" or \"hour\"".into() }),
    };
    if period != Period::Day {
        return Err(ApiError::BadParameter { parameter: "period", message: "anomalies are per day".into() });
    }
    let min_severity = match param(query, "severity") {
        None => 0,
        Some(s) => {
            severity_rank(&s).ok_or_else(|| ApiError::BadParameter { parameter: "severity", message: "must be \"low\", \"medium\" or \"high\"".into() })?
        }
    };
    let user = match param(query, "user") {
        Some(u) if !valid_id(&u) => return Err(ApiError::BadParameter { parameter: "user", message: "not a valid user id".into() }),
        u => u,
    };
    Ok(AnomalyQuery { min_severity, user, limit: parse_limit(query)? })
}

/// Ids as they appear in our keys: no `:` (that would address another key), no wildcards.
pub fn valid_id(s: &str) -> bool {
    !s.is_empty() && s.len() <= 256 && s.bytes().all(|b| b.is_ascii_graphic() && !b"*?[]:".contains(&b))
}

pub fn param(query: Option<&str>, name: &str) -> Option<String> {
    query.into_iter().flat_map(|q| form_urlencoded::parse(q.as_bytes())).find(|(k, _)| k == name).map(|(_, v)| v.into_owned())
}

/// `dry_run` from a query string: `true`/`1` or `false`/`0` (default false).
pub fn parse_dry_run(query: Option<&str>) -> Result<bool, ApiError> {
    match param(query, "dry_run").as_deref() {
        None | Some("false") | Some("0") => Ok(false),
        Some("true") | Some("1") => Ok(true),
        Some(_) => Err(ApiError::BadParameter { parameter: "dry_run", message: "must be true or false".into() }),
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_and_parameters() {
        assert_eq!(route("GET", "sessions/active"), Ok(Endpoint::ActiveSessions));
        assert_eq!(route("GET", "/sessions/stats/"), Ok(Endpoint::SessionStats));
        assert_eq!(route("GET", "users/u1/sessions"), Ok(Endpoint::UserSessions { user_id: "u1" }));
        assert_eq!(route("GET", "sessions/abc"), Ok(Endpoint::Session { sid: "abc" }));
        assert_eq!(route("POST", "sessions/active"), Err(ApiError::MethodNotAllowed));
        assert_eq!(route("DELETE", "sessions/abc"), Ok(Endpoint::RevokeSession { sid: "abc" }));
        assert_eq!(route("DELETE", "sessions/active"), Err(ApiError::MethodNotAllowed), "not a session id");
        assert_eq!(route("POST", "users/u1/revoke"), Ok(Endpoint::RevokeUser { user_id: "u1" }));
        assert_eq!(route("GET", "users/u1/export"), Ok(Endpoint::ExportUser { user_id: "u1" }));
        assert_eq!(route("DELETE", "users/u1"), Ok(Endpoint::EraseUser { user_id: "u1" }));
        assert_eq!(route("GET", "users/u1"), Err(ApiError::MethodNotAllowed));
        assert_eq!(parse_dry_run(Some("dry_run=true")), Ok(true));
        assert!(parse_dry_run(Some("dry_run=maybe")).is_err());
        assert_eq!(route("GET", "users/u1/revoke"), Err(ApiError::MethodNotAllowed));
        assert_eq!(route("DELETE", "users/u1/sessions"), Err(ApiError::MethodNotAllowed));
        assert_eq!(route("GET", "audit"), Ok(Endpoint::Audit));
        assert_eq!(route("GET", "sessions/anomalies"), Ok(Endpoint::Anomalies));
        assert_eq!(route("GET", "sessions/replay/abc"), Ok(Endpoint::Replay { sid: "abc" }));
        assert_eq!(route("GET", "users/u1/behavior-patterns"), Ok(Endpoint::UserBehavior { user_id: "u1" }));
        assert_eq!(route("GET", "sessions/online"), Ok(Endpoint::Online));
        assert_eq!(route("DELETE", "sessions/online"), Err(ApiError::MethodNotAllowed), "not a session id");
        assert_eq!(route("POST", "users/u1/behavior-patterns"), Err(ApiError::MethodNotAllowed));
        let q = parse_anomaly_query(Some("date=2026-12-04&severity=medium&user=u1&limit=5")).unwrap();
        assert_eq!(q, AnomalyQuery { min_severity: 1, user: Some("u1".into()), limit: 5 });
        assert!(matches!(parse_anomaly_query(Some("severity=urgent")), Err(ApiError::BadParameter { parameter: "severity", .. })));
        assert!(matches!(parse_anomaly_query(Some("user=a:b")), Err(ApiError::BadParameter { parameter: "user", .. })));
        assert!(route("POST", "users/u1/revoke").unwrap().is_change() && !route("GET", "audit").unwrap().is_change());
        assert_eq!(route("GET", "acquisition"), Ok(Endpoint::Acquisition));
        assert_eq!(route("GET", "funnels"), Ok(Endpoint::Funnels));
        assert!(route("POST", "funnels").unwrap().is_change());
        assert_eq!(route("GET", "funnels/signup-2"), Ok(Endpoint::Funnel { name: "signup-2" }));
        assert_eq!(route("GET", "funnels/Sign:up"), Err(ApiError::NotFound));
        assert_eq!(route("POST", "funnels/signup"), Err(ApiError::MethodNotAllowed));
        assert_eq!(route("GET", "retention"), Ok(Endpoint::Retention));
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
