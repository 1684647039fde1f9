//! Sessions revoked through the API, refused by every proxy instance at once. I/O (Redis).
//!
//! A revocation is kept in Redis ([`keys::REVOKED_SESSIONS`], scored by when it may be forgotten)
//! and announced on [`keys::REVOCATIONS_CHANNEL`]. Every instance keeps the set in memory: it
//! subscribes to the channel, and loads the set whenever it (re)subscribes, so neither an
//! instance that starts later nor one whose subscription dropped for a while misses one.
//! The authenticator asks [`Revocations::contains`] for every
//! session it identifies, whatever cache answered, so a revoked session is refused even while an
//! in-process or Redis copy of its identity is still fresh. While nothing is revoked that costs
//! one atomic load per request.

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

/// The revoked session ids this instance refuses.
pub struct Revocations {
    ids: Cache<String, ()>,
    any: AtomicBool,
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

    /// How long a revocation is kept.
    pub fn keep(&self) -> Duration {
        self.keep
    }

    /// Loads every revocation still kept in Redis; returns how many.
    pub async fn load(&self, store: &RedisStore) -> Result<usize, StoreError> {
        let now = chrono::Utc::now().timestamp_millis();
        let ids: Vec<String> = store.query(redis::cmd("ZRANGE").arg(keys::REVOKED_SESSIONS).arg(now).arg("+inf").arg("BYSCORE")).await?;
        for id in &ids {
            self.insert(id);
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
        pipe.zadd(keys::REVOKED_SESSIONS, sid, until).ignore();
    }
    pipe.cmd("ZREMRANGEBYSCORE").arg(keys::REVOKED_SESSIONS).arg("-inf").arg(format!("({now}")).ignore();
    pipe.expire(keys::REVOKED_SESSIONS, keep.as_secs() as i64 + 60).ignore();
    for sid in sids {
        pipe.publish(keys::REVOCATIONS_CHANNEL, sid).ignore();
    }
    store.pipeline::<()>(&pipe).await
}

/// Keeps [`Revocations`] current from the channel (background service).
pub struct RevocationListener {
    pub redis_url: String,
    pub store: RedisStore,
    pub revocations: Arc<Revocations>,
}

impl RevocationListener {
    async fn listen(&self) -> redis::RedisResult<()> {
        let client = redis::Client::open(self.redis_url.as_str())?;
        let mut pubsub = client.get_async_pubsub().await?;
        pubsub.subscribe(keys::REVOCATIONS_CHANNEL).await?;
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
                        if let Ok(sid) = msg.get_payload::<String>() {
                            self.revocations.insert(&sid);
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
}
