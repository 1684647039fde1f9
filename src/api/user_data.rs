//! One user's data, whole: export it (`GET {api}/users/{id}/export`, `sting-proxy export`) and
//! erase it (`DELETE {api}/users/{id}`, `sting-proxy erase`). I/O (Redis).
//!
//! Both start from what links records to a user: the user's session index and active set.
//! Erasing removes every per-user and per-session key, the user's and their sessions' entries
//! in shared sets, lists and the alert stream, the Redis copies of their Kratos answers, and
//! (signed cookies) the app's session keys of those sessions, which logs them out. It is
//! idempotent and works in batches of [`BATCH`]. It keeps revoked and step-up session ids
//! (bare random ids, linked to nothing once the rest is gone), so a revoked session stays
//! refused everywhere. What it cannot take out per user is listed
//! in `docs/privacy.md`: counts already summed into daily totals and breakdowns, and
//! HyperLogLog registers, which hold no identifier.
//!
//! These walks scan key families (`SCAN`), unlike the read endpoints: erasure is a rare,
//! deliberate operation.

use std::collections::BTreeSet;

use crate::api::queries::{session_json, QueryError};
use crate::capture::aggregate::replay_entry_json;
use crate::store::keys::{self, Period};
use crate::store::{field_cipher, RedisStore, Scan, StoreError};

/// Keys or entries handled per round trip.
pub const BATCH: usize = 500;

/// How far back per-session page sets can reach before a session's last activity: their
/// longest life (a day and its slack).
const PAGE_SETS_REACH_MS: i64 = 3 * 86_400_000;

/// What the walks need to know about the deployment.
#[derive(Debug, Clone)]
pub struct Scope {
    /// Days of anomaly lists to search (the retention).
    pub retention_days: u64,
    /// The app's session lifetime (light-record buckets reach that far back), seconds.
    pub lifetime_secs: u64,
    /// The app's key prefix when session ids name app keys (signed cookies).
    pub app_key_prefix: Option<String>,
}

/// What an erasure removed (or, dry, would remove).
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Erased {
    pub user_id: String,
    pub dry_run: bool,
    pub sessions: usize,
    pub keys_deleted: u64,
    pub entries_removed: u64,
}

/// The user's session ids: their index and their active set.
async fn sessions_of(store: &RedisStore, user: &str) -> Result<BTreeSet<String>, StoreError> {
    let (indexed, active): (Vec<String>, Vec<String>) =
        store.pipeline(redis::pipe().zrange(keys::user_sessions(user), 0, -1).smembers(keys::active_user(user))).await?;
    Ok(indexed.into_iter().chain(active).collect())
}

/// The per-user keys.
fn user_keys(user: &str) -> Vec<String> {
    vec![
        keys::user_sessions(user),
        keys::active_user(user),
        keys::user_known(user),
        keys::user_activity(user),
        keys::user_routes(user),
        keys::user_devices(user),
        keys::user_countries(user),
    ]
}

/// The per-session keys of `sid` whose names are known (records, lists, recent page sets).
async fn session_keys(store: &RedisStore, sid: &str) -> Result<Vec<String>, StoreError> {
    let (last, end): (Option<i64>, Option<i64>) =
        store.pipeline(redis::pipe().hget(keys::analytics_session(sid), "last_time").hget(keys::analytics_session(sid), "end_time")).await?;
    let mut out = vec![keys::analytics_session(sid), keys::session_actions(sid), keys::session_replay(sid), keys::session_journey(sid)];
    if let Some(last) = last.max(end) {
        let mut t = last - PAGE_SETS_REACH_MS;
        while t <= last + 3_600_000 {
            out.push(keys::session_pages(sid, &Period::Hour.label(t)));
            out.push(keys::session_pages(sid, &Period::Day.label(t)));
            t += 3_600_000;
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// Every record the proxy holds about `user`, opened; 404 when it holds none.
pub async fn export(store: &RedisStore, user: &str, scope: &Scope) -> Result<serde_json::Value, QueryError> {
    let sids = sessions_of(store, user).await?;
    let mut sessions = Vec::new();
    for sid in &sids {
        let (rec, actions, replay): (std::collections::HashMap<String, String>, Vec<String>, Vec<String>) = store
            .pipeline(redis::pipe().hgetall(keys::analytics_session(sid)).lrange(keys::session_actions(sid), 0, -1).lrange(keys::session_replay(sid), 0, -1))
            .await?;
        if rec.is_empty() && actions.is_empty() && replay.is_empty() {
            continue;
        }
        let mut s = session_json(sid, &rec);
        s["actions"] = actions.iter().filter_map(|a| serde_json::from_str(a).ok()).collect::<Vec<serde_json::Value>>().into();
        s["requests"] = replay.iter().rev().filter_map(|e| replay_entry_json(e)).collect::<Vec<_>>().into();
        sessions.push(s);
    }
    let known: Vec<String> = store.query(redis::cmd("SMEMBERS").arg(keys::user_known(user))).await?;
    // The behaviour patterns as the API shows them (absent for a user without aggregates).
    let behavior = match crate::api::queries::answer(store, &crate::api::endpoint::Endpoint::UserBehavior { user_id: user }, None).await {
        Ok(v) => v,
        Err(QueryError::NotFound(_)) => serde_json::Value::Null,
        Err(e) => return Err(e),
    };
    let anomalies = matching_list_entries(store, &anomaly_lists(scope), user, &sids).await?;
    let audit = matching_list_entries(store, &[keys::audit_log().to_owned()], user, &sids).await?;
    if sessions.is_empty() && known.is_empty() && anomalies.is_empty() && behavior.is_null() {
        return Err(QueryError::NotFound("no data about this user"));
    }
    let parse = |v: Vec<(String, String)>| v.into_iter().filter_map(|(_, e)| serde_json::from_str::<serde_json::Value>(&e).ok()).collect::<Vec<_>>();
    Ok(serde_json::json!({
        "user_id": user,
        "exported_at": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "sessions": sessions,
        "known_devices_and_countries": known,
        "behavior": behavior,
        "anomalies": parse(anomalies),
        "audit": parse(audit),
    }))
}

/// The day anomaly lists within the retention.
fn anomaly_lists(scope: &Scope) -> Vec<String> {
    let now = chrono::Utc::now().timestamp_millis();
    (0..=scope.retention_days as i64).map(|d| keys::anomalies(&Period::Day.label(now - d * 86_400_000))).collect()
}

/// Whether a JSON entry (an anomaly, an audit entry, an alert) is about `user` or one of `sids`.
/// An audit entry the user *made* (an admin's revocation of someone else) is not about them:
/// erasing an admin does not wipe their trail.
fn about(entry: &serde_json::Value, user: &str, sids: &BTreeSet<String>) -> bool {
    let is = |k: &str| entry[k].as_str().is_some_and(|v| v == user || sids.contains(v));
    is("user_id") || is("session_id") || is("target")
}

/// `(list, entry)` for every entry of `lists` about the user.
async fn matching_list_entries(store: &RedisStore, lists: &[String], user: &str, sids: &BTreeSet<String>) -> Result<Vec<(String, String)>, StoreError> {
    let mut out = Vec::new();
    for list in lists {
        let entries: Vec<String> = store.query(redis::cmd("LRANGE").arg(list).arg(0).arg(-1)).await?;
        out.extend(entries.into_iter().filter(|e| serde_json::from_str(e).is_ok_and(|v| about(&v, user, sids))).map(|e| (list.clone(), e)));
    }
    Ok(out)
}

/// Removes everything about `user` (or, `dry_run`, counts it). Idempotent.
pub async fn erase(store: &RedisStore, user: &str, scope: &Scope, dry_run: bool) -> Result<Erased, StoreError> {
    let sids = sessions_of(store, user).await?;
    let mut report = Erased { user_id: user.to_owned(), dry_run, sessions: sids.len(), ..Erased::default() };
    let sid_list: Vec<&String> = sids.iter().collect();

    // Keys: per user, per session, the app's session keys, and the scanned families.
    let mut doomed = user_keys(user);
    for sid in &sids {
        doomed.extend(session_keys(store, sid).await?);
        if let Some(prefix) = &scope.app_key_prefix {
            doomed.push(keys::flask_session(prefix, sid));
        }
    }
    doomed.extend(scanned_keys(store, user, &sids).await?);
    // Key by key: on a cluster the app's session keys and the Kratos cache lie in any slot.
    for chunk in doomed.chunks(BATCH) {
        let exists: Vec<redis::Cmd> = chunk.iter().map(|k| redis::cmd("EXISTS").arg(k).clone()).collect();
        let present: Vec<i64> = store.query_each(&exists, store.command_timeout()).await?;
        let present: Vec<&String> = chunk.iter().zip(present).filter(|(_, e)| *e == 1).map(|(k, _)| k).collect();
        report.keys_deleted += present.len() as u64;
        if !dry_run && !present.is_empty() {
            let dels: Vec<redis::Cmd> = present.iter().map(|k| redis::cmd("DEL").arg(k).clone()).collect();
            store.query_each::<i64>(&dels, store.command_timeout()).await?;
        }
    }

    // Members of shared sets and sorted sets, and light-record fields.
    let mut shared: Vec<(&str, String)> = vec![("SREM", keys::active_sessions().to_owned())];
    // Not the revoked and step-up sets: a revoked session must stay refused on every instance
    // (its entry is a bare random id that nothing links to the user once the rest is gone).
    for z in [keys::recent_sessions(), keys::online_sessions()] {
        shared.push(("ZREM", z.to_owned()));
    }
    let now = chrono::Utc::now().timestamp_millis();
    for b in keys::light_buckets(now, scope.lifetime_secs) {
        shared.push(("HDEL", format!("{}{}", b.key, keys::LIGHT_ENDED_SUFFIX)));
        shared.push(("HDEL", b.key));
    }
    for chunk in sid_list.chunks(BATCH) {
        for (op, key) in &shared {
            let check = match *op {
                "SREM" => "SMISMEMBER",
                "ZREM" => "ZMSCORE",
                _ => "HMGET",
            };
            let found: Vec<redis::Value> = store.query(redis::cmd(check).arg(key).arg(chunk)).await?;
            let n = found.iter().filter(|v| !matches!(v, redis::Value::Nil | redis::Value::Int(0))).count() as u64;
            report.entries_removed += n;
            if !dry_run && n > 0 {
                store.query::<()>(redis::cmd(op).arg(key).arg(chunk)).await?;
            }
        }
    }

    // The user's retention index (their bits left in the daily bitmaps then name no one), and
    // their members of the acquisition and funnel user sets (`...\n{user}`).
    let indexed: bool = store.query(redis::cmd("HEXISTS").arg(keys::user_index()).arg(user)).await?;
    if indexed {
        report.entries_removed += 1;
        if !dry_run {
            store.query::<()>(redis::cmd("HDEL").arg(keys::user_index()).arg(user)).await?;
        }
    }
    let funnels: Vec<(String, String)> =
        store.query::<std::collections::HashMap<String, String>>(redis::cmd("HGETALL").arg(keys::funnels())).await?.into_iter().collect();
    let pattern = format!("*\n{}", glob_escape(user));
    for set in user_member_sets(scope, &funnels) {
        let mut found: Vec<String> = Vec::new();
        let mut cursor = 0u64;
        loop {
            let (next, members): (u64, Vec<String>) =
                store.query(redis::cmd("SSCAN").arg(&set).arg(cursor).arg("MATCH").arg(&pattern).arg("COUNT").arg(BATCH)).await?;
            found.extend(members.into_iter().filter(|m| m.ends_with(&format!("\n{user}"))));
            if next == 0 {
                break;
            }
            cursor = next;
        }
        found.sort();
        found.dedup();
        report.entries_removed += found.len() as u64;
        if !dry_run && !found.is_empty() {
            store.query::<()>(redis::cmd("SREM").arg(&set).arg(&found)).await?;
        }
    }

    // Entries of shared lists (anomalies, the audit log) and the alert stream.
    let mut lists = anomaly_lists(scope);
    lists.push(keys::audit_log().to_owned());
    for (list, entry) in matching_list_entries(store, &lists, user, &sids).await? {
        report.entries_removed += 1;
        if !dry_run {
            store.query::<()>(redis::cmd("LREM").arg(&list).arg(0).arg(&entry)).await?;
        }
    }
    for id in alert_ids(store, user, &sids).await? {
        report.entries_removed += 1;
        if !dry_run {
            store.query::<()>(redis::cmd("XDEL").arg(keys::alert_stream()).arg(&id)).await?;
        }
    }
    Ok(report)
}

/// The sets whose members end in a user id: acquisition users per day and hour, and the funnel
/// users per day, over the retention.
fn user_member_sets(scope: &Scope, funnels: &[(String, String)]) -> Vec<String> {
    let now = chrono::Utc::now().timestamp_millis();
    let mut out = Vec::new();
    for d in 0..=scope.retention_days as i64 {
        let day_ms = now - d * 86_400_000;
        let day = Period::Day.label(day_ms);
        out.push(keys::acquisition_users(Period::Day, &day));
        let start = Period::Day.slot(day_ms).index * 86_400_000;
        for h in 0..24 {
            out.push(keys::acquisition_users(Period::Hour, &Period::Hour.label(start + h * 3_600_000)));
        }
        for (name, json) in funnels {
            out.push(keys::funnel_day_users(&day, name, &crate::config::funnel::version(json)));
        }
    }
    out
}

/// `s` with the glob characters of `SCAN ... MATCH` escaped.
fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Keys of scanned families that belong to the user or their sessions: AAL2 events and alert
/// delivery marks (named by sid), and the Redis copies of the user's Kratos answers.
async fn scanned_keys(store: &RedisStore, user: &str, sids: &BTreeSet<String>) -> Result<Vec<String>, StoreError> {
    let mut out = Vec::new();
    for prefix in [keys::aal2_prefix(), keys::alert_sent_prefix()] {
        let pattern = format!("{prefix}*");
        let mut scan = store.scanner(Scan::Keys(&pattern), BATCH);
        while let Some(batch) = scan.next_batch().await? {
            out.extend(batch.into_iter().filter(|k| k[prefix.len()..].split(':').next().is_some_and(|sid| sids.contains(sid))));
        }
    }
    let pattern = format!("{}*", keys::KRATOS_CACHE_PREFIX);
    let mut scan = store.scanner(Scan::Keys(&pattern), BATCH);
    while let Some(batch) = scan.next_batch().await? {
        // Key by key: the cache spreads over a cluster's slots.
        let gets: Vec<redis::Cmd> = batch.iter().map(|k| redis::cmd("GET").arg(k).clone()).collect();
        let values: Vec<Option<String>> = store.query_each(&gets, store.command_timeout()).await?;
        for (k, v) in batch.into_iter().zip(values) {
            let answer = v.and_then(|v| field_cipher::shown(&v)).and_then(|v| serde_json::from_str::<serde_json::Value>(&v).ok());
            if answer.is_some_and(|a| a["identity"]["user_id"] == user) {
                out.push(k);
            }
        }
    }
    Ok(out)
}

/// Ids of alert-stream entries about the user.
async fn alert_ids(store: &RedisStore, user: &str, sids: &BTreeSet<String>) -> Result<Vec<String>, StoreError> {
    // XRANGE: [[id, [field, value, ...]], ...]
    let reply: redis::Value = store.query(redis::cmd("XRANGE").arg(keys::alert_stream()).arg("-").arg("+")).await?;
    let text = |v: &redis::Value| redis::from_redis_value::<String>(v).ok();
    let redis::Value::Array(entries) = reply else { return Ok(Vec::new()) };
    Ok(entries
        .iter()
        .filter_map(|e| match e {
            redis::Value::Array(pair) if pair.len() == 2 => {
                let fields = match &pair[1] {
                    redis::Value::Array(f) => f.iter().filter_map(text).collect::<Vec<_>>(),
                    _ => Vec::new(),
                };
                let mentions = fields.iter().any(|v| serde_json::from_str(v).is_ok_and(|a| about(&a, user, sids)));
                mentions.then(|| text(&pair[0])).flatten()
            }
            _ => None,
        })
        .collect())
}
