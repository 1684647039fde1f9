//! The analytics reads behind every API endpoint and ops CLI command, so both always report the
//! same numbers. Each answer is a bounded amount of Redis work: fixed keys, capped ranges, one
//! pipeline (no `KEYS`, no scans). I/O.

use std::collections::HashMap;

use chrono::{Datelike, Timelike};

use crate::api::endpoint::{param, parse_anomaly_query, parse_limit, parse_limit_or, severity_rank, timeseries_labels, ApiError, Endpoint};
use crate::api::ranges::{parse_range, top_summed, Range};
use crate::store::field_cipher;
use crate::store::keys::{self, Period};
use crate::store::{RedisStore, Scan, StoreError};

pub use crate::api::query_error::QueryError;

/// Largest `days` the peak-hours query accepts (the default retention is 30 days).
pub const MAX_PEAK_DAYS: i64 = 31;

/// Weekday names, Monday first, as the peak-hours matrix rows.
pub const WEEKDAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];

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

fn period_name(p: Period) -> &'static str {
    match p {
        Period::Day => "day",
        Period::Hour => "hour",
    }
}

/// A session record in the API's shape (the seed's fields, and a few more).
pub fn session_json(sid: &str, rec: &HashMap<String, String>) -> serde_json::Value {
    let get = |k: &str| rec.get(k).filter(|v| !v.is_empty()).cloned();
    let num = |k: &str| rec.get(k).and_then(|v| v.parse::<i64>().ok());
    let device = get("device");
    serde_json::json!({
        "session_id": sid,
        "user_id": get("user_id"),
        "email": get("email").and_then(|v| field_cipher::shown(&v)),
        "start_time": iso(num("start_time")),
        "last_activity": iso(num("last_time")),
        "end_time": iso(num("end_time")),
        "end_reason": get("end_reason"),
        "duration": num("duration"),
        "page_views": num("page_views").unwrap_or(0),
        "hits": num("hits").unwrap_or(0),
        "ip_address": get("ip").and_then(|v| field_cipher::shown(&v)),
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

/// The records of `sids`, in order, skipping those whose record has expired. One round trip.
pub async fn session_records(store: &RedisStore, sids: &[String]) -> Result<Vec<serde_json::Value>, StoreError> {
    if sids.is_empty() {
        return Ok(Vec::new());
    }
    let mut pipe = redis::pipe();
    for sid in sids {
        pipe.hgetall(keys::analytics_session(sid));
    }
    let records: Vec<HashMap<String, String>> = store.pipeline(&pipe).await?;
    Ok(sids.iter().zip(&records).filter(|(_, rec)| !rec.is_empty()).map(|(sid, rec)| session_json(sid, rec)).collect())
}

/// Up to `limit` members of the active set (in no particular order), by `SSCAN`.
pub async fn active_session_ids(store: &RedisStore, limit: usize) -> Result<Vec<String>, StoreError> {
    let mut sids = std::collections::BTreeSet::new();
    let mut scan = store.scanner(Scan::Set(keys::active_sessions()), limit.clamp(10, 1000));
    while sids.len() < limit {
        match scan.next_batch().await? {
            Some(batch) => sids.extend(batch),
            None => break,
        }
    }
    Ok(sids.into_iter().take(limit).collect())
}

/// The newest `limit` sessions of a start-time index (a sorted set) and the index's size.
async fn indexed_sessions(store: &RedisStore, index: &str, limit: usize) -> Result<(Vec<serde_json::Value>, i64), StoreError> {
    let (sids, total): (Vec<String>, i64) = store.pipeline(redis::pipe().zrevrange(index, 0, limit as isize - 1).zcard(index)).await?;
    Ok((session_records(store, &sids).await?, total))
}

/// The answer to one endpoint. `query` is the raw query string; parameters are validated here.
pub async fn answer(store: &RedisStore, ep: &Endpoint<'_>, query: Option<&str>) -> Result<serde_json::Value, QueryError> {
    match *ep {
        Endpoint::ActiveSessions => {
            let n: i64 = store.query(redis::cmd("SCARD").arg(keys::active_sessions())).await?;
            Ok(serde_json::json!({"active_sessions": n, "timestamp": now_iso()}))
        }
        Endpoint::SessionStats => session_stats(store, query).await,
        Endpoint::RecentSessions => {
            let limit = parse_limit(query)?;
            let (sessions, total) = indexed_sessions(store, keys::recent_sessions(), limit).await?;
            Ok(serde_json::json!({"sessions": sessions, "total_count": total}))
        }
        Endpoint::UserSessions { user_id } => {
            let limit = parse_limit(query)?;
            let (sessions, total) = indexed_sessions(store, &keys::user_sessions(user_id), limit).await?;
            Ok(serde_json::json!({"user_id": user_id, "sessions": sessions, "total_count": total}))
        }
        Endpoint::Session { sid } => {
            let (rec, actions): (HashMap<String, String>, Vec<String>) =
                store.pipeline(redis::pipe().hgetall(keys::analytics_session(sid)).lrange(keys::session_actions(sid), 0, 99)).await?;
            if rec.is_empty() {
                return Err(QueryError::NotFound("no such session"));
            }
            let actions: Vec<serde_json::Value> = actions.iter().filter_map(|a| serde_json::from_str(a).ok()).collect();
            let mut body = session_json(sid, &rec);
            body["actions"] = serde_json::json!(actions);
            Ok(body)
        }
        Endpoint::TopPages | Endpoint::Devices | Endpoint::Geo => breakdowns(store, ep, query).await,
        Endpoint::Durations => durations(store, query).await,
        Endpoint::Timeseries => timeseries(store, query).await,
        Endpoint::PeakHours => peak_hours(store, query).await,
        Endpoint::Replay { sid } => {
            let entries: Vec<String> = store.query(redis::cmd("LRANGE").arg(keys::session_replay(sid)).arg(0).arg(-1)).await?;
            if entries.is_empty() {
                return Err(QueryError::NotFound("no replay for this session"));
            }
            let mut timeline: Vec<serde_json::Value> = entries.iter().filter_map(|e| crate::capture::aggregate::replay_entry_json(e)).collect();
            timeline.reverse();
            Ok(serde_json::json!({"session_id": sid, "requests": timeline}))
        }
        Endpoint::Anomalies => {
            let q = parse_anomaly_query(query)?;
            let days = parse_range(query)?.labels;
            // Newest day first, each day's list newest first.
            let mut pipe = redis::pipe();
            for day in days.iter().rev() {
                pipe.lrange(keys::anomalies(day), 0, -1);
            }
            let lists: Vec<Vec<String>> = store.pipeline(&pipe).await?;
            let matching: Vec<serde_json::Value> = lists
                .iter()
                .flatten()
                .filter_map(|e| serde_json::from_str::<serde_json::Value>(e).ok())
                .filter(|a| a["severity"].as_str().and_then(severity_rank).is_some_and(|r| r >= q.min_severity))
                .filter(|a| q.user.as_deref().is_none_or(|u| a["user_id"] == u))
                .collect();
            let total = matching.len();
            let (from, to) = (days.first().cloned().unwrap_or_default(), days.last().cloned().unwrap_or_default());
            Ok(serde_json::json!({"date": from, "from": from, "to": to, "anomalies": matching.into_iter().take(q.limit).collect::<Vec<_>>(), "total": total}))
        }
        Endpoint::Audit => {
            let limit = parse_limit(query)?;
            let entries: Vec<String> = store.query(redis::cmd("LRANGE").arg(keys::audit_log()).arg(0).arg(limit - 1)).await?;
            let entries: Vec<serde_json::Value> = entries.iter().filter_map(|e| serde_json::from_str(e).ok()).collect();
            Ok(serde_json::json!({"entries": entries}))
        }
        Endpoint::AlertRules => {
            let raw: Option<String> = store.query(redis::cmd("GET").arg(keys::alert_rules())).await?;
            let rules: Vec<crate::capture::alerts::AlertRule> = raw.and_then(|r| serde_json::from_str(&r).ok()).unwrap_or_default();
            Ok(serde_json::json!({"rules": rules}))
        }
        Endpoint::UserBehavior { user_id } => behavior(store, user_id, query).await,
        Endpoint::Acquisition => crate::api::journeys::acquisition(store, query).await,
        Endpoint::Funnels => crate::api::journeys::funnels(store).await,
        Endpoint::Funnel { name } => crate::api::journeys::funnel(store, name, query).await,
        Endpoint::Retention => crate::api::journeys::retention(store, query).await,
        Endpoint::Online => online(store, query).await,
        Endpoint::OpenApi
        | Endpoint::ActiveStream
        | Endpoint::RevokeSession { .. }
        | Endpoint::RevokeUser { .. }
        | Endpoint::ConfigureAlerts
        | Endpoint::ExportUser { .. }
        | Endpoint::EraseUser { .. }
        | Endpoint::DefineFunnel => Err(QueryError::NotFound("not a query: served by the proxy directly")),
    }
}

/// Most sessions of a user that `users/{id}/behavior-patterns` reads: the newest of its index,
/// over which the median length is taken and from which the list is cut.
pub const BEHAVIOR_SESSIONS: usize = 500;

/// The session-record fields the behaviour answer measures every known session by.
const LENGTH_FIELDS: [&str; 4] = ["start_time", "last_time", "end_time", "duration"];

/// A session's length in seconds: its duration once ended, else its last activity minus its
/// start so far. `None` without a start (an expired record).
fn session_length(start: Option<i64>, last: Option<i64>, end: Option<i64>, duration: Option<i64>) -> Option<i64> {
    let start = start?;
    Some(match (end, duration) {
        (Some(_), Some(d)) => d,
        _ => (last.unwrap_or(start) - start).max(0) / 1000,
    })
}

/// The median of `values` (the mean of the middle two for an even count); `None` when empty.
pub fn median(values: &mut [i64]) -> Option<f64> {
    values.sort_unstable();
    let n = values.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(values[n / 2] as f64),
        _ => Some((values[n / 2 - 1] + values[n / 2]) as f64 / 2.0),
    }
}

/// `{browser}|{os}|{type}` → `{"name", "browser", "os", "type", "count"}` (the parts null for
/// the overflow member).
fn device_rows(rows: Vec<(String, f64)>) -> serde_json::Value {
    serde_json::json!(rows
        .into_iter()
        .map(|(name, n)| {
            let parts: Vec<&str> = name.splitn(3, '|').collect();
            let part = |i: usize| if parts.len() == 3 { serde_json::json!(parts[i]) } else { serde_json::Value::Null };
            serde_json::json!({"name": name, "browser": part(0), "os": part(1), "type": part(2), "count": n as i64})
        })
        .collect::<Vec<_>>())
}

/// `users/{id}/behavior-patterns`: the user's aggregates (written by the analytics writer per
/// signed-in request) and their newest sessions. Two round trips of bounded size: the
/// aggregates (at most 170 hash fields and 3 capped sorted sets) with the session index, then
/// the newest [`BEHAVIOR_SESSIONS`] records (whole for the `limit` listed, 4 fields for the rest).
async fn behavior(store: &RedisStore, user_id: &str, query: Option<&str>) -> Result<serde_json::Value, QueryError> {
    let limit = parse_limit_or(query, 20)?;
    let index = keys::user_sessions(user_id);
    let mut pipe = redis::pipe();
    pipe.hgetall(keys::user_activity(user_id))
        .zrevrange_withscores(keys::user_routes(user_id), 0, -1)
        .zrevrange_withscores(keys::user_devices(user_id), 0, -1)
        .zrevrange_withscores(keys::user_countries(user_id), 0, -1)
        .zrevrange(&index, 0, BEHAVIOR_SESSIONS as isize - 1)
        .zcard(&index)
        .zrange_withscores(&index, 0, 0);
    #[allow(clippy::type_complexity)]
    let (activity, routes, devices, countries, sids, total, oldest): (
        HashMap<String, i64>,
        Vec<(String, f64)>,
        Vec<(String, f64)>,
        Vec<(String, f64)>,
        Vec<String>,
        i64,
        Vec<(String, f64)>,
    ) = store.pipeline(&pipe).await?;
    if activity.is_empty() && total == 0 {
        return Err(QueryError::NotFound("no such user"));
    }
    let mut pipe = redis::pipe();
    for (i, sid) in sids.iter().enumerate() {
        if i < limit {
            pipe.hgetall(keys::analytics_session(sid));
        } else {
            pipe.cmd("HMGET").arg(keys::analytics_session(sid)).arg(&LENGTH_FIELDS[..]);
        }
    }
    let replies: Vec<redis::Value> = if sids.is_empty() { Vec::new() } else { store.pipeline(&pipe).await? };
    let mut lengths = Vec::new();
    let mut listed = Vec::new();
    let mut newest_activity: Option<i64> = None;
    for (i, (sid, reply)) in sids.iter().zip(replies).enumerate() {
        let rec: HashMap<String, String> = if i < limit {
            redis::from_redis_value(&reply).map_err(StoreError::Redis)?
        } else {
            let values: Vec<Option<String>> = redis::from_redis_value(&reply).map_err(StoreError::Redis)?;
            LENGTH_FIELDS.iter().zip(values).filter_map(|(f, v)| v.map(|v| ((*f).to_owned(), v))).collect()
        };
        let num = |k: &str| rec.get(k).and_then(|v| v.parse::<i64>().ok());
        let Some(length) = session_length(num("start_time"), num("last_time"), num("end_time"), num("duration")) else { continue };
        lengths.push(length);
        newest_activity = newest_activity.max(num("last_time").or(num("start_time")));
        if i < limit {
            let mut s = session_json(sid, &rec);
            s["length_seconds"] = serde_json::json!(length);
            listed.push(s);
        }
    }
    let mut matrix = [[0i64; 24]; 7];
    for (field, n) in &activity {
        let Some((d, h)) = field.split_once(':') else { continue };
        if let (Ok(d), Ok(h)) = (d.parse::<usize>(), h.parse::<usize>()) {
            if d < 7 && h < 24 {
                matrix[d][h] += n;
            }
        }
    }
    let first_seen = [activity.get("first_seen").copied(), oldest.first().map(|(_, s)| *s as i64)].into_iter().flatten().min();
    let last_seen = [activity.get("last_seen").copied(), newest_activity].into_iter().flatten().max();
    let measured = lengths.len();
    Ok(serde_json::json!({
        "user_id": user_id,
        "first_seen": iso(first_seen),
        "last_seen": iso(last_seen),
        "requests": matrix.iter().flatten().sum::<i64>(),
        "hours": {"timezone": "UTC", "weekdays": WEEKDAYS, "matrix": matrix},
        "devices": device_rows(devices),
        "countries": ranked(countries),
        "routes": ranked(routes),
        "median_session_seconds": median(&mut lengths),
        "sessions_measured": measured,
        "sessions_total": total,
        "sessions": listed,
    }))
}

/// `sessions/online`: signed-in active sessions, newest activity first, each with its last
/// route (the newest entry of its replay list). Two round trips: the newest `limit` of the
/// online index, then their records and replay heads.
async fn online(store: &RedisStore, query: Option<&str>) -> Result<serde_json::Value, QueryError> {
    let limit = parse_limit(query)?;
    let (sids, total): (Vec<String>, i64) =
        store.pipeline(redis::pipe().zrevrange(keys::online_sessions(), 0, limit as isize - 1).zcard(keys::online_sessions())).await?;
    let mut sessions = Vec::new();
    if !sids.is_empty() {
        let mut pipe = redis::pipe();
        for sid in &sids {
            pipe.hgetall(keys::analytics_session(sid)).lindex(keys::session_replay(sid), 0);
        }
        let replies: Vec<redis::Value> = store.pipeline(&pipe).await?;
        for (sid, pair) in sids.iter().zip(replies.chunks(2)) {
            let rec: HashMap<String, String> = redis::from_redis_value(&pair[0]).map_err(StoreError::Redis)?;
            // Ended since (or gone): not online, whatever the index still says.
            if rec.get("user_id").is_none_or(|u| u.is_empty()) || rec.contains_key("end_time") {
                continue;
            }
            let head: Option<String> = redis::from_redis_value(&pair[1]).map_err(StoreError::Redis)?;
            let last: Option<serde_json::Value> = head.and_then(|h| crate::capture::aggregate::replay_entry_json(&h));
            let mut s = session_json(sid, &rec);
            s["last_route"] = last.as_ref().map(|l| l["route"].clone()).unwrap_or(serde_json::Value::Null);
            s["last_method"] = last.as_ref().map(|l| l["method"].clone()).unwrap_or(serde_json::Value::Null);
            sessions.push((rec.get("last_time").and_then(|t| t.parse::<i64>().ok()).unwrap_or(0), s));
        }
    }
    // The index's order, corrected by the records (the newest activity first).
    sessions.sort_by_key(|s| std::cmp::Reverse(s.0));
    Ok(serde_json::json!({"sessions": sessions.into_iter().map(|(_, s)| s).collect::<Vec<_>>(), "total": total, "timestamp": now_iso()}))
}

async fn session_stats(store: &RedisStore, query: Option<&str>) -> Result<serde_json::Value, QueryError> {
    let range = parse_range(query)?;
    if range.period != Period::Day {
        return Err(ApiError::BadParameter { parameter: "period", message: "stats are per day".into() }.into());
    }
    let counters = summed_hashes(store, &range).await?;
    let hlls: Vec<String> = range.labels.iter().map(|d| keys::analytics_unique_users(Period::Day, d)).collect();
    // The union of the days' distinct users (one PFCOUNT over every day's HyperLogLog).
    let (users, active): (i64, i64) = store.pipeline(redis::pipe().cmd("PFCOUNT").arg(&hlls).scard(keys::active_sessions())).await?;
    let c = |k: &str| counters.get(k).copied().unwrap_or(0);
    let ended = c("sessions_ended");
    let avg_minutes = if ended > 0 { c("duration_total_s") as f64 / ended as f64 / 60.0 } else { 0.0 };
    Ok(serde_json::json!({
        "total_sessions_today": c("sessions_started"),
        "average_duration_minutes": (avg_minutes * 100.0).round() / 100.0,
        "unique_users_today": users,
        "active_sessions": active,
        "sessions_ended_today": ended,
        "page_views_today": c("page_views"),
        "hits_today": c("hits"),
        "date": range.from(),
        "from": range.from(),
        "to": range.to(),
        "timestamp": now_iso(),
    }))
}

async fn breakdowns(store: &RedisStore, ep: &Endpoint<'_>, query: Option<&str>) -> Result<serde_json::Value, QueryError> {
    let range = parse_range(query)?;
    let period = range.period;
    let limit = parse_limit_or(query, 10)?;
    let dims: &[&str] = match ep {
        Endpoint::TopPages => &["pages"],
        Endpoint::Devices => &["browsers", "os", "devices"],
        _ => &["countries", "cities"],
    };
    let mut pipe = redis::pipe();
    for d in dims {
        for label in &range.labels {
            if range.labels.len() == 1 {
                pipe.zrevrange_withscores(keys::analytics_breakdown(period, label, d), 0, limit as isize - 1);
            } else {
                pipe.zrange_withscores(keys::analytics_breakdown(period, label, d), 0, -1);
            }
        }
    }
    // Bot page views whatever `limit` shows (the writer counts them in the period hash).
    for label in &range.labels {
        pipe.hget(keys::analytics_period(period, label), "bot_page_views");
    }
    let replies: Vec<redis::Value> = store.pipeline(&pipe).await?;
    let (sets, bot_replies) = replies.split_at(dims.len() * range.labels.len());
    let mut bots = 0i64;
    for b in bot_replies {
        bots += redis::from_redis_value::<Option<i64>>(b).map_err(StoreError::Redis)?.unwrap_or(0);
    }
    let mut rows: Vec<Vec<(String, f64)>> = Vec::new();
    for per_dim in sets.chunks(range.labels.len().max(1)) {
        let days: Vec<Vec<(String, f64)>> = per_dim.iter().map(redis::from_redis_value).collect::<Result<_, _>>().map_err(StoreError::Redis)?;
        rows.push(top_summed(days, limit));
    }
    let mut body = range.describe();
    for (d, r) in dims.iter().zip(rows) {
        let name = if *d == "devices" { "device_types" } else { d };
        body[name] = ranked(r);
    }
    if let Some(pages) = body.get_mut("pages").and_then(|v| v.as_array_mut()).filter(|p| !p.is_empty()) {
        // Distinct sessions per listed page: one more round trip, as many members as `limit`.
        // Over a range: a session counts once per page per day it viewed it.
        let mut pipe = redis::pipe();
        for label in &range.labels {
            let mut cmd = redis::cmd("ZMSCORE");
            cmd.arg(keys::analytics_breakdown(period, label, keys::PAGE_SESSIONS));
            for p in pages.iter() {
                cmd.arg(p["name"].as_str().unwrap_or_default());
            }
            pipe.add_command(cmd);
        }
        let per_day: Vec<Vec<Option<f64>>> = store.pipeline(&pipe).await?;
        for (i, p) in pages.iter_mut().enumerate() {
            let n: f64 = per_day.iter().map(|d| d.get(i).copied().flatten().unwrap_or(0.0)).sum();
            p["unique_sessions"] = serde_json::json!(n as i64);
        }
    }
    if matches!(ep, Endpoint::Devices) {
        body["bots"] = serde_json::json!(bots);
    }
    Ok(body)
}

async fn durations(store: &RedisStore, query: Option<&str>) -> Result<serde_json::Value, QueryError> {
    let range = parse_range(query)?;
    let h = summed_hashes(store, &range).await?;
    let ended = h.get("sessions_ended").copied().unwrap_or(0);
    let total = h.get("duration_total_s").copied().unwrap_or(0);
    let mut buckets: Vec<(Option<u64>, i64)> =
        crate::capture::session_scripts::DURATION_BUCKETS.iter().map(|b| (Some(*b), h.get(&format!("duration_le_{b}")).copied().unwrap_or(0))).collect();
    buckets.push((None, h.get("duration_gt_max").copied().unwrap_or(0)));
    // The median lies in the first bucket whose running count reaches half the sessions.
    let mut running = 0;
    let median = buckets.iter().find_map(|(le, n)| {
        running += n;
        (ended > 0 && running * 2 >= ended).then_some(*le)
    });
    let mut body = range.describe();
    let answer = serde_json::json!({
        "sessions_ended": ended,
        "average_seconds": if ended > 0 { total as f64 / ended as f64 } else { 0.0 },
        "median_le_seconds": median.flatten(),
        "buckets": buckets.iter().map(|(le, n)| serde_json::json!({"le_seconds": le, "count": n})).collect::<Vec<_>>(),
    });
    if let (Some(b), Some(a)) = (body.as_object_mut(), answer.as_object()) {
        b.extend(a.clone());
    }
    Ok(body)
}

/// The analytics hashes of `range`'s periods, summed field by field (one pipeline).
pub async fn summed_hashes(store: &RedisStore, range: &Range) -> Result<HashMap<String, i64>, StoreError> {
    let mut pipe = redis::pipe();
    for label in &range.labels {
        pipe.hgetall(keys::analytics_period(range.period, label));
    }
    let hashes: Vec<HashMap<String, i64>> = store.pipeline(&pipe).await?;
    let mut sum = HashMap::new();
    for h in hashes {
        for (k, v) in h {
            *sum.entry(k).or_insert(0) += v;
        }
    }
    Ok(sum)
}

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

async fn timeseries(store: &RedisStore, query: Option<&str>) -> Result<serde_json::Value, QueryError> {
    let metric = param(query, "metric").unwrap_or_else(|| "page_views".into());
    let field = timeseries_field(&metric)
        .ok_or(ApiError::BadParameter { parameter: "metric", message: "must be page_views, sessions_started, unique_users, hits or errors".into() })?;
    let (granularity, labels) = timeseries_labels(query)?;
    let mut pipe = redis::pipe();
    for l in &labels {
        match field {
            Some(f) => pipe.hget(keys::analytics_period(granularity, l), f),
            None => pipe.cmd("PFCOUNT").arg(keys::analytics_unique_users(granularity, l)),
        };
    }
    let values: Vec<Option<i64>> = store.pipeline(&pipe).await?;
    let points: Vec<serde_json::Value> = labels.iter().zip(values).map(|(l, v)| serde_json::json!({"t": l, "value": v.unwrap_or(0)})).collect();
    Ok(serde_json::json!({"metric": metric, "granularity": period_name(granularity), "points": points}))
}

/// The hours of the last `days` UTC days (today included, up to the current hour).
pub fn peak_hour_range(now: chrono::DateTime<chrono::Utc>, days: i64) -> Vec<chrono::DateTime<chrono::Utc>> {
    let this_hour = now.with_minute(0).and_then(|t| t.with_second(0)).and_then(|t| t.with_nanosecond(0)).unwrap_or(now);
    let first = (now.date_naive() - chrono::Duration::days(days - 1)).and_hms_opt(0, 0, 0).map(|t| t.and_utc()).unwrap_or(this_hour);
    let mut hours = Vec::new();
    let mut t = first;
    while t <= this_hour {
        hours.push(t);
        t += chrono::Duration::hours(1);
    }
    hours
}

/// Hour-of-day × weekday totals of one hourly counter over the last `days` days, read from the
/// hourly hashes (at most 31 × 24 `HGET`s in one pipeline; no extra counters to keep).
async fn peak_hours(store: &RedisStore, query: Option<&str>) -> Result<serde_json::Value, QueryError> {
    let metric = param(query, "metric").unwrap_or_else(|| "page_views".into());
    // The hourly counters of the timeseries metrics (unique users cannot be summed).
    let Some(Some(field)) = timeseries_field(&metric) else {
        return Err(ApiError::BadParameter { parameter: "metric", message: "must be page_views, hits, sessions_started or errors".into() }.into());
    };
    let days = match param(query, "days") {
        None => 28,
        Some(v) => v
            .parse::<i64>()
            .ok()
            .filter(|d| (1..=MAX_PEAK_DAYS).contains(d))
            .ok_or(ApiError::BadParameter { parameter: "days", message: format!("must be a whole number from 1 to {MAX_PEAK_DAYS}") })?,
    };
    let hours = peak_hour_range(chrono::Utc::now(), days);
    let mut pipe = redis::pipe();
    for t in &hours {
        pipe.hget(keys::analytics_period(Period::Hour, &Period::Hour.label(t.timestamp_millis())), field);
    }
    let values: Vec<Option<i64>> = store.pipeline(&pipe).await?;
    let mut matrix = [[0i64; 24]; 7];
    for (t, v) in hours.iter().zip(values) {
        matrix[t.weekday().num_days_from_monday() as usize][t.hour() as usize] += v.unwrap_or(0);
    }
    let mut peak: Option<(usize, usize, i64)> = None;
    for (d, row) in matrix.iter().enumerate() {
        for (h, v) in row.iter().enumerate() {
            if *v > 0 && peak.is_none_or(|(_, _, best)| *v > best) {
                peak = Some((d, h, *v));
            }
        }
    }
    let label = |t: Option<&chrono::DateTime<chrono::Utc>>| t.map(|t| Period::Hour.label(t.timestamp_millis()));
    Ok(serde_json::json!({
        "metric": metric,
        "days": days,
        "from": label(hours.first()),
        "to": label(hours.last()),
        "timezone": "UTC",
        "weekdays": WEEKDAYS,
        "matrix": matrix,
        "peak": peak.map(|(d, h, v)| serde_json::json!({"weekday": WEEKDAYS[d], "weekday_index": d, "hour": h, "value": v})),
        "total": matrix.iter().flatten().sum::<i64>(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn session_lengths_and_their_median() {
        assert_eq!(session_length(Some(1_000), Some(4_999), None, None), Some(3), "ongoing: so far, whole seconds");
        assert_eq!(session_length(Some(1_000), Some(4_999), Some(9_000), Some(8)), Some(8), "ended: its duration");
        assert_eq!(session_length(None, Some(4_999), None, None), None);
        assert_eq!(median(&mut []), None);
        assert_eq!(median(&mut [5, 1, 3]), Some(3.0));
        assert_eq!(median(&mut [4, 1, 3, 10]), Some(3.5));
    }

    #[test]
    fn peak_hours_cover_whole_days_up_to_now() {
        let now = chrono::DateTime::parse_from_rfc3339("2026-11-30T13:45:10Z").unwrap().to_utc();
        let one = peak_hour_range(now, 1);
        assert_eq!(one.len(), 14, "00:00 to 13:00 today");
        assert_eq!(Period::Hour.label(one[0].timestamp_millis()), "2026-11-30T00");
        let four_weeks = peak_hour_range(now, 28);
        assert_eq!(four_weeks.len(), 27 * 24 + 14);
        assert_eq!(Period::Hour.label(four_weeks[0].timestamp_millis()), "2026-11-03T00");
        // Every weekday appears exactly four times at every completed hour.
        let mondays_at_9 = four_weeks.iter().filter(|t| t.weekday() == chrono::Weekday::Mon && t.hour() == 9).count();
        assert_eq!(mondays_at_9, 4);
    }
}
