//! The live active-sessions count behind `GET {api}/stream/active` (Server-Sent Events) and the
//! dashboard's sparkline. One poller per process reads `SCARD` once a second, and only while
//! someone listens, then publishes on a watch channel that every open stream reads: the Redis
//! work does not grow with the number of viewers. I/O.

use std::time::Duration;

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use tokio::sync::watch;

use crate::store::keys;
use crate::store::RedisStore;

/// How often the count is read while anyone listens.
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// One reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reading {
    pub active_sessions: i64,
    pub ts_ms: i64,
}

impl Reading {
    /// One SSE event: `event: active` with the API's `sessions/active` JSON as data.
    pub fn sse_event(&self) -> String {
        let ts = chrono::DateTime::from_timestamp_millis(self.ts_ms).unwrap_or_default();
        let data = serde_json::json!({
            "active_sessions": self.active_sessions,
            "timestamp": ts.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        });
        format!("event: active\ndata: {data}\n\n")
    }
}

/// Subscribes streams to the readings. Cheap to clone.
#[derive(Clone)]
pub struct LiveFeed {
    template: watch::Receiver<Option<Reading>>,
}

impl LiveFeed {
    /// A receiver for one stream; `changed()` fails once the poller stops (shutdown), which
    /// ends the stream so a graceful shutdown is not held up by open dashboards.
    pub fn subscribe(&self) -> watch::Receiver<Option<Reading>> {
        self.template.clone()
    }
}

/// The background poller.
pub struct Poller {
    store: RedisStore,
    tx: watch::Sender<Option<Reading>>,
}

/// A feed and the poller that fills it.
pub fn channel(store: RedisStore) -> (LiveFeed, Poller) {
    let (tx, rx) = watch::channel(None);
    (LiveFeed { template: rx }, Poller { store, tx })
}

#[async_trait]
impl BackgroundService for Poller {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut tick = tokio::time::interval(POLL_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.changed() => return, // drops `tx`: every stream ends
            }
            // The feed's template receiver is always there; more means a stream is open. With
            // nobody listening, forget the last reading: a later viewer must not get a stale one.
            if self.tx.receiver_count() <= 1 {
                if self.tx.borrow().is_some() {
                    self.tx.send_replace(None);
                }
                continue;
            }
            match self.store.query::<i64>(redis::cmd("SCARD").arg(keys::active_sessions())).await {
                Ok(n) => {
                    self.tx.send_replace(Some(Reading { active_sessions: n, ts_ms: chrono::Utc::now().timestamp_millis() }));
                }
                Err(e) => tracing::debug!(error = %e, "live active count unavailable"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_event_carries_the_active_sessions_json() {
        let r = Reading { active_sessions: 7, ts_ms: 1_796_043_900_000 };
        assert_eq!(r.sse_event(), "event: active\ndata: {\"active_sessions\":7,\"timestamp\":\"2026-11-30T13:05:00.000Z\"}\n\n");
    }
}
