//! `sting-proxy validate [--fix]`: data-integrity checks over the proxy's keys (the seed's
//! `validate_data_integrity` and `cleanup_orphaned_data`), each a `SCAN`/`SSCAN`/`ZSCAN` walk in
//! batches with one pipelined check per batch. Repairs only remove dangling references and add
//! missing TTLs; they never delete a session record or a counter. I/O.

use std::time::Duration;

use crate::keys;
use crate::store::{RedisStore, StoreError};
use crate::terminal::Progress;

/// Keys or members examined per round trip.
pub const SCAN_BATCH: usize = 1000;

/// Problems found by one check, and how many were repaired.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Finding {
    pub check: &'static str,
    pub description: &'static str,
    pub examined: u64,
    pub found: u64,
    pub fixed: u64,
    /// Up to a few offending keys or members, for the report.
    pub examples: Vec<String>,
}

const MAX_EXAMPLES: usize = 5;

impl Finding {
    fn new(check: &'static str, description: &'static str) -> Self {
        Self { check, description, ..Self::default() }
    }

    fn note(&mut self, what: String) {
        self.found += 1;
        if self.examples.len() < MAX_EXAMPLES {
            self.examples.push(what);
        }
    }
}

/// What the checks need to know about the deployment.
pub struct Settings {
    pub fix: bool,
    /// TTL (s) given to an analytics key found without one.
    pub retention_secs: u64,
    /// TTL (s) given to a cached Kratos answer found without one.
    pub kratos_cache_secs: u64,
    /// The app's session key prefix: those keys are the app's, never touched.
    pub flask_prefix: String,
}

/// Runs every check in order; returns one finding per check.
pub async fn validate(store: &RedisStore, s: &Settings, progress: &mut Progress) -> Result<Vec<Finding>, StoreError> {
    let mut out = Vec::new();
    out.push(active_set(store, s, progress).await?);
    out.push(user_active_sets(store, s, progress).await?);
    out.push(session_indexes(store, s, progress).await?);
    out.push(keys_without_ttl(store, s, progress).await?);
    progress.done();
    Ok(out)
}

/// What a session record says about membership: (exists, ended, user id).
async fn records(store: &RedisStore, sids: &[String]) -> Result<Vec<(bool, bool, Option<String>)>, StoreError> {
    let mut pipe = redis::pipe();
    for sid in sids {
        pipe.cmd("HMGET").arg(keys::analytics_session(sid)).arg("start_time").arg("end_time").arg("user_id");
    }
    let rows: Vec<(Option<String>, Option<String>, Option<String>)> = store.pipeline_within(&pipe, Duration::from_secs(10)).await?;
    Ok(rows.into_iter().map(|(start, end, user)| (start.is_some(), end.is_some(), user)).collect())
}

/// Walks a collection key with `SSCAN`/`ZSCAN`, calling `visit` once per batch of members.
async fn scan_members<F>(store: &RedisStore, scan: &str, key: &str, progress: &mut Progress, mut visit: F) -> Result<(), StoreError>
where
    F: AsyncFnMut(Vec<String>) -> Result<(), StoreError>,
{
    let mut cursor: u64 = 0;
    let mut seen = 0usize;
    loop {
        let (next, raw): (u64, Vec<String>) = store.query(redis::cmd(scan).arg(key).arg(cursor).arg("COUNT").arg(SCAN_BATCH)).await?;
        // ZSCAN answers member, score, member, score, ...
        let members: Vec<String> = if scan == "ZSCAN" { raw.into_iter().step_by(2).collect() } else { raw };
        seen += members.len();
        progress.update(&format!("{key}: {seen} members checked"));
        if !members.is_empty() {
            visit(members).await?;
        }
        if next == 0 {
            return Ok(());
        }
        cursor = next;
    }
}

/// Walks the keyspace with `SCAN MATCH pattern`, calling `visit` once per batch of keys.
async fn scan_keys<F>(store: &RedisStore, pattern: &str, progress: &mut Progress, mut visit: F) -> Result<(), StoreError>
where
    F: AsyncFnMut(Vec<String>) -> Result<(), StoreError>,
{
    let mut cursor: u64 = 0;
    let mut seen = 0usize;
    loop {
        let (next, batch): (u64, Vec<String>) =
            store.query(redis::cmd("SCAN").arg(cursor).arg("MATCH").arg(pattern).arg("COUNT").arg(SCAN_BATCH)).await?;
        seen += batch.len();
        progress.update(&format!("{pattern}: {seen} keys checked"));
        if !batch.is_empty() {
            visit(batch).await?;
        }
        if next == 0 {
            return Ok(());
        }
        cursor = next;
    }
}

/// `sting:active:sessions` members must have a record that has not ended.
async fn active_set(store: &RedisStore, s: &Settings, progress: &mut Progress) -> Result<Finding, StoreError> {
    let mut f = Finding::new("active_without_record", "active sessions whose record is missing or already ended");
    scan_members(store, "SSCAN", keys::ACTIVE_SESSIONS, progress, async |sids: Vec<String>| {
        f.examined += sids.len() as u64;
        let bad: Vec<&String> =
            sids.iter().zip(records(store, &sids).await?).filter(|(_, (exists, ended, _))| !exists || *ended).map(|(sid, _)| sid).collect();
        for sid in &bad {
            f.note((*sid).clone());
        }
        if s.fix && !bad.is_empty() {
            let removed: u64 = store.query(redis::cmd("SREM").arg(keys::ACTIVE_SESSIONS).arg(&bad)).await?;
            f.fixed += removed;
        }
        Ok(())
    })
    .await?;
    Ok(f)
}

/// Each `sting:active:users:{user}` member must be an active session of that user.
async fn user_active_sets(store: &RedisStore, s: &Settings, progress: &mut Progress) -> Result<Finding, StoreError> {
    let mut f = Finding::new("user_active_dangling", "users' active-session entries that are missing, ended or another user's");
    let mut sets = Vec::new();
    scan_keys(store, &format!("{}*", keys::ACTIVE_USER_PREFIX), progress, async |batch: Vec<String>| {
        sets.extend(batch);
        Ok(())
    })
    .await?;
    for set in sets {
        let user = set[keys::ACTIVE_USER_PREFIX.len()..].to_owned();
        scan_members(store, "SSCAN", &set, progress, async |sids: Vec<String>| {
            f.examined += sids.len() as u64;
            let bad: Vec<&String> = sids
                .iter()
                .zip(records(store, &sids).await?)
                .filter(|(_, (exists, ended, owner))| !exists || *ended || owner.as_deref() != Some(user.as_str()))
                .map(|(sid, _)| sid)
                .collect();
            for sid in &bad {
                f.note(format!("{set} {sid}"));
            }
            if s.fix && !bad.is_empty() {
                let removed: u64 = store.query(redis::cmd("SREM").arg(&set).arg(&bad)).await?;
                f.fixed += removed;
            }
            Ok(())
        })
        .await?;
    }
    Ok(f)
}

/// Session indexes (`sting:analytics:user:{user}:sessions`, the recent-sessions list) must
/// point at existing records.
async fn session_indexes(store: &RedisStore, s: &Settings, progress: &mut Progress) -> Result<Finding, StoreError> {
    let mut f = Finding::new("index_dangling", "session-index entries (user histories, recent sessions) pointing at no record");
    let mut indexes = vec![keys::RECENT_SESSIONS.to_owned()];
    scan_keys(store, &keys::user_sessions("*"), progress, async |batch: Vec<String>| {
        indexes.extend(batch);
        Ok(())
    })
    .await?;
    for index in indexes {
        scan_members(store, "ZSCAN", &index, progress, async |sids: Vec<String>| {
            f.examined += sids.len() as u64;
            let bad: Vec<&String> = sids.iter().zip(records(store, &sids).await?).filter(|(_, (exists, _, _))| !exists).map(|(sid, _)| sid).collect();
            for sid in &bad {
                f.note(format!("{index} {sid}"));
            }
            if s.fix && !bad.is_empty() {
                let removed: u64 = store.query(redis::cmd("ZREM").arg(&index).arg(&bad)).await?;
                f.fixed += removed;
            }
            Ok(())
        })
        .await?;
    }
    Ok(f)
}

/// Every key the proxy writes expires (see `docs/redis-schema.md`); one without a TTL would
/// live forever. The app's own session keys are left alone.
async fn keys_without_ttl(store: &RedisStore, s: &Settings, progress: &mut Progress) -> Result<Finding, StoreError> {
    let mut f = Finding::new("no_ttl", "proxy keys without a TTL (they would never expire)");
    scan_keys(store, "sting:*", progress, async |batch: Vec<String>| {
        let ours: Vec<String> = batch.into_iter().filter(|k| s.flask_prefix.is_empty() || !k.starts_with(&s.flask_prefix)).collect();
        if ours.is_empty() {
            return Ok(());
        }
        f.examined += ours.len() as u64;
        let mut pipe = redis::pipe();
        for k in &ours {
            pipe.ttl(k);
        }
        let ttls: Vec<i64> = store.pipeline_within(&pipe, Duration::from_secs(10)).await?;
        let bad: Vec<&String> = ours.iter().zip(ttls).filter(|(_, t)| *t == -1).map(|(k, _)| k).collect();
        let mut fix = redis::pipe();
        for k in &bad {
            f.note((*k).clone());
            fix.expire(*k, ttl_for(k, s) as i64);
        }
        if s.fix && !bad.is_empty() {
            let set: Vec<i64> = store.pipeline_within(&fix, Duration::from_secs(10)).await?;
            f.fixed += set.iter().filter(|r| **r == 1).count() as u64;
        }
        Ok(())
    })
    .await?;
    Ok(f)
}

/// The TTL a key of the proxy's should carry, by its documented pattern.
pub fn ttl_for(key: &str, s: &Settings) -> u64 {
    if key.starts_with(keys::AAL2_PREFIX) {
        keys::AAL2_EVENT_TTL_SECS
    } else if key.starts_with(keys::ANALYTICS_BATCH_PREFIX) {
        keys::ANALYTICS_BATCH_TTL_SECS
    } else if key.starts_with(keys::KRATOS_CACHE_PREFIX) {
        s.kratos_cache_secs
    } else {
        s.retention_secs
    }
}
