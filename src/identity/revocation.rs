//! Sessions revoked through the API, refused by every proxy instance at once. I/O (Redis).
//!
//! A revocation is kept in Redis ([`keys::revoked_sessions()`], scored by when it may be forgotten)
//! and announced on [`keys::revocations_channel()`]. Every instance keeps the set in memory: it
//! subscribes to the channel, and loads the set whenever it (re)subscribes, so neither an
//! instance that starts later nor one whose subscription dropped for a while misses one.
//! The authenticator asks [`Revocations::contains`] for every
//! session it identifies, whatever cache answered, so a revoked session is refused even while an
//! in-process or Redis copy of its identity is still fresh. While nothing is revoked that costs
//! one atomic load per request.
//!
//! Step-up marks (`security.actions.<detector> = "step_up"`) travel the same way: kept in
//! [`keys::step_up_sessions()`] (scored by when the mark was made) and announced on the same
//! channel as `step_up:{ms}:{sid}`; `stepped_up:{sid}` clears one everywhere once the session has
//! authenticated again with a second factor. A bare sid on the channel is a revocation.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;
use moka::sync::Cache;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use crate::store::keys;
use crate::store::{RedisStore, StoreError};

/// How often the listener reloads the whole set besides following the channel.
pub const RELOAD_EVERY: Duration = Duration::from_secs(30);

/// Most revocations one instance holds in memory (the Redis set is the record).
pub const MAX_REVOKED_IN_MEMORY: u64 = 1_000_000;

/// Channel payload prefix of a step-up mark: `step_up:{ms}:{sid}`.
const STEP_UP_MESSAGE: &str = "step_up:";

/// Channel payload prefix of a cleared step-up mark: `stepped_up:{sid}`.
const STEPPED_UP_MESSAGE: &str = "stepped_up:";

/// The revoked session ids this instance refuses, and the sessions it holds until they step up.
pub struct Revocations {
    ids: Cache<String, ()>,
    any: AtomicBool,
    /// sid → when (unix ms) it was told to step up.
    step_up: Cache<String, i64>,
    any_step_up: AtomicBool,
    /// The set has been loaded from Redis once: until then `/readyz` says not ready.
    loaded: AtomicBool,
    keep: Duration,
}

impl Revocations {
    /// `keep`: how long a revocation is remembered (longer than any session can live).
    pub fn new(keep: Duration) -> Self {
        Self {
            ids: Cache::builder().max_capacity(MAX_REVOKED_IN_MEMORY).time_to_live(keep).build(),
            any: AtomicBool::new(false),
            step_up: Cache::builder().max_capacity(MAX_REVOKED_IN_MEMORY).time_to_live(keep).build(),
            any_step_up: AtomicBool::new(false),
            loaded: AtomicBool::new(false),
            keep,
        }
    }

    /// Whether `sid` (a published Flask sid or a Kratos session id) was revoked.
    pub fn contains(&self, sid: &str) -> bool {
        self.any.load(Ordering::Relaxed) && self.ids.contains_key(sid)
    }

    /// Refuses `sid` in this instance from now on.
    pub fn insert(&self, sid: &str) {
        self.ids.insert(sid.to_owned(), ());
        self.any.store(true, Ordering::Relaxed);
    }

    /// Since when (unix ms) `sid` must authenticate again with a second factor, if it must.
    pub fn step_up_since(&self, sid: &str) -> Option<i64> {
        if !self.any_step_up.load(Ordering::Relaxed) {
            return None;
        }
        self.step_up.get(sid)
    }

    /// Holds `sid` until it steps up (a mark made at `since_ms`).
    pub fn insert_step_up(&self, sid: &str, since_ms: i64) {
        self.step_up.insert(sid.to_owned(), since_ms);
        self.any_step_up.store(true, Ordering::Relaxed);
    }

    /// `sid` has stepped up: honour it again.
    pub fn remove_step_up(&self, sid: &str) {
        self.step_up.invalidate(sid);
    }

    /// Applies one channel message.
    fn apply(&self, payload: &str) {
        if let Some(rest) = payload.strip_prefix(STEP_UP_MESSAGE) {
            // A mark whose time does not parse is dropped: a time of 0 would let any AAL2 pass.
            if let Some((Ok(ms), sid)) = rest.split_once(':').map(|(ms, sid)| (ms.parse::<i64>(), sid)) {
                self.insert_step_up(sid, ms);
            }
        } else if let Some(sid) = payload.strip_prefix(STEPPED_UP_MESSAGE) {
            self.remove_step_up(sid);
        } else {
            self.insert(payload);
        }
    }

    /// How long a revocation is kept.
    pub fn keep(&self) -> Duration {
        self.keep
    }

    /// Loads every revocation still kept in Redis; returns how many.
    pub async fn load(&self, store: &RedisStore) -> Result<usize, StoreError> {
        let now = chrono::Utc::now().timestamp_millis();
        let ids: Vec<String> = store.query(redis::cmd("ZRANGE").arg(keys::revoked_sessions()).arg(now).arg("+inf").arg("BYSCORE")).await?;
        for id in &ids {
            self.insert(id);
        }
        let marks: Vec<(String, i64)> = store
            .query(redis::cmd("ZRANGE").arg(keys::step_up_sessions()).arg(now - self.keep.as_millis() as i64).arg("+inf").arg("BYSCORE").arg("WITHSCORES"))
            .await?;
        // Marks cleared while this instance was not listening must go too.
        self.step_up.invalidate_all();
        for (sid, since) in &marks {
            self.insert_step_up(sid, *since);
        }
        self.loaded.store(true, Ordering::Release);
        Ok(ids.len())
    }

    /// Whether the revocations kept in Redis have been loaded (readiness).
    pub fn loaded(&self) -> bool {
        self.loaded.load(Ordering::Acquire)
    }
}

/// Records and announces the revocation of `sids` (one `MULTI`): every instance refuses them
/// within a pub/sub delivery. The caller's instance should also [`Revocations::insert`] them.
pub async fn publish(store: &RedisStore, sids: &[String], keep: Duration) -> Result<(), StoreError> {
    let now = chrono::Utc::now().timestamp_millis();
    let until = now + keep.as_millis() as i64;
    let mut pipe = redis::pipe();
    pipe.atomic();
    for sid in sids {
        pipe.zadd(keys::revoked_sessions(), sid, until).ignore();
    }
    pipe.cmd("ZREMRANGEBYSCORE").arg(keys::revoked_sessions()).arg("-inf").arg(format!("({now}")).ignore();
    pipe.expire(keys::revoked_sessions(), keep.as_secs() as i64 + 60).ignore();
    for sid in sids {
        pipe.publish(keys::revocations_channel(), sid).ignore();
    }
    store.pipeline::<()>(&pipe).await
}

/// Records and announces that `sids` must step up (authenticate again with a second factor)
/// before any instance honours them again.
pub async fn publish_step_up(store: &RedisStore, sids: &[String], keep: Duration) -> Result<(), StoreError> {
    let now = chrono::Utc::now().timestamp_millis();
    let mut pipe = redis::pipe();
    pipe.atomic();
    for sid in sids {
        pipe.zadd(keys::step_up_sessions(), sid, now).ignore();
    }
    pipe.cmd("ZREMRANGEBYSCORE").arg(keys::step_up_sessions()).arg("-inf").arg(format!("({}", now - keep.as_millis() as i64)).ignore();
    pipe.expire(keys::step_up_sessions(), keep.as_secs() as i64 + 60).ignore();
    for sid in sids {
        pipe.publish(keys::revocations_channel(), format!("{STEP_UP_MESSAGE}{now}:{sid}")).ignore();
    }
    store.pipeline::<()>(&pipe).await
}

/// Clears `sid`'s step-up mark everywhere: it authenticated again with a second factor.
pub async fn publish_stepped_up(store: &RedisStore, sid: &str) -> Result<(), StoreError> {
    let mut pipe = redis::pipe();
    pipe.atomic().zrem(keys::step_up_sessions(), sid).ignore().publish(keys::revocations_channel(), format!("{STEPPED_UP_MESSAGE}{sid}")).ignore();
    store.pipeline::<()>(&pipe).await
}

/// Keeps [`Revocations`] current from the channel (background service).
pub struct RevocationListener {
    /// Subscribes on one of its servers: a `PUBLISH` reaches every node of a cluster.
    pub store: RedisStore,
    pub revocations: Arc<Revocations>,
}

impl RevocationListener {
    async fn listen(&self) -> Result<(), StoreError> {
        let client = self.store.node_clients().await?.into_iter().next().ok_or(StoreError::NotConnected)?;
        let mut pubsub = client.get_async_pubsub().await?;
        pubsub.subscribe(keys::revocations_channel()).await?;
        // Subscribed first, then loaded: a revocation made in between is in one or the other.
        match self.revocations.load(&self.store).await {
            Ok(n) => tracing::info!(revoked = n, "listening for session revocations"),
            Err(e) => {
                tracing::warn!(error = %e, "could not load revoked sessions; retrying");
                return Ok(());
            }
        }
        let mut messages = pubsub.on_message();
        // A subscription a NAT or proxy dropped silently delivers nothing and reports nothing:
        // reloading the set now and then bounds what such a gap can miss.
        let mut reload = tokio::time::interval(RELOAD_EVERY);
        reload.tick().await;
        loop {
            tokio::select! {
                msg = messages.next() => match msg {
                    Some(msg) => {
                        if let Ok(payload) = msg.get_payload::<String>() {
                            self.revocations.apply(&payload);
                        }
                    }
                    None => return Ok(()),
                },
                _ = reload.tick() => {
                    if let Err(e) = self.revocations.load(&self.store).await {
                        tracing::warn!(error = %e, "could not reload revoked sessions");
                    }
                }
            }
        }
    }
}

#[async_trait]
impl BackgroundService for RevocationListener {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        loop {
            tokio::select! {
                r = self.listen() => {
                    if let Err(e) = r {
                        tracing::warn!(error = %e, "revocation listener lost; reconnecting");
                    }
                }
                _ = shutdown.changed() => return,
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_only_what_was_revoked() {
        let r = Revocations::new(Duration::from_secs(60));
        assert!(!r.contains("s1"));
        r.insert("s1");
        assert!(r.contains("s1"));
        assert!(!r.contains("s2"));
    }

    #[test]
    fn channel_messages_revoke_mark_and_clear() {
        let r = Revocations::new(Duration::from_secs(60));
        r.apply("step_up:1700000000000:s1");
        assert_eq!(r.step_up_since("s1"), Some(1_700_000_000_000));
        assert!(!r.contains("s1"), "a step-up is not a revocation");
        r.apply("stepped_up:s1");
        assert_eq!(r.step_up_since("s1"), None);
        r.apply("s2");
        assert!(r.contains("s2"));
        assert_eq!(r.step_up_since("s2"), None);
    }
}
