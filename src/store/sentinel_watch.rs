//! Following the master of a Sentinel set. I/O.
//!
//! A master that dies is noticed by the calls that fail on it; a master that is demoted while
//! it stays up (`SENTINEL FAILOVER`, a network partition healing) answers writes until Sentinel
//! turns it into a replica, and what it took in the meantime is discarded when it resyncs. So
//! the store does not wait for an error: it subscribes to the sentinels' `+switch-master`
//! announcements and, as a backstop, asks them for the master every [`POLL_EVERY`]; a call that
//! finds the master unreachable or answers `READONLY`/`NOREPLICAS` asks at once.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures_util::StreamExt;

use crate::config::redis_target::{RedisMode, RedisTarget};
use crate::store::connection::{self, StoreConnection};
use crate::store::{RedisStore, StoreError, PROBE_INTERVAL};

/// How often the store asks the sentinels for the master even without an announcement.
pub const POLL_EVERY: Duration = Duration::from_secs(1);

impl RedisStore {
    /// Sentinel only: asks the sentinels for the master again (in the background, one search at
    /// a time, at most once per [`PROBE_INTERVAL`]) and moves the connection if it changed.
    pub(super) fn find_master_if_sentinel(&self) {
        if self.mode() != RedisMode::Sentinel {
            return;
        }
        {
            let mut last = self.inner.last_asked.lock().unwrap_or_else(|e| e.into_inner());
            if last.is_some_and(|t| t.elapsed() < PROBE_INTERVAL) {
                return;
            }
            *last = Some(Instant::now());
        }
        let store = self.clone();
        tokio::spawn(async move { store.follow_master().await });
    }

    /// Asks the sentinels for the master and moves the connection to it if it changed; one
    /// search at a time (a second caller returns at once).
    async fn follow_master(&self) {
        if self.inner.finding_master.swap(true, Ordering::AcqRel) {
            return;
        }
        // Cleared however the search ends, even cancelled with its runtime.
        struct Searching<'a>(&'a std::sync::atomic::AtomicBool);
        impl Drop for Searching<'_> {
            fn drop(&mut self) {
                self.0.store(false, Ordering::Release);
            }
        }
        let _searching = Searching(&self.inner.finding_master);
        if let Err(e) = self.move_to_master().await {
            tracing::debug!(error = %e, "sentinels did not name a reachable master yet");
        }
    }

    async fn move_to_master(&self) -> Result<(), StoreError> {
        let t = self.inner.timeouts;
        let client = connection::sentinel_master(&self.inner.target, t).await?;
        let address = connection::address_of(&client);
        if self.inner.master.lock().unwrap_or_else(|e| e.into_inner()).as_ref().map(connection::address_of).as_deref() == Some(address.as_str()) {
            return Ok(());
        }
        let conn = connection::single(client.clone(), t).await?;
        self.inner.set_connection(StoreConnection::Single(conn));
        self.inner.generation.fetch_add(1, Ordering::AcqRel);
        let old = self.inner.master.lock().unwrap_or_else(|e| e.into_inner()).replace(client).map(|c| connection::address_of(&c));
        crate::observe::metrics::metrics().redis_master_changes.inc();
        tracing::warn!(from = old.as_deref().unwrap_or("-"), to = %address, "Sentinel named a new Redis master; connection moved");
        Ok(())
    }

    /// Runs for the life of the runtime: follows `+switch-master` announcements of the first
    /// sentinel that accepts a subscription, and asks every [`POLL_EVERY`] besides.
    pub(super) async fn watch_sentinels(self) {
        let RedisTarget::Sentinel { sentinels, master, .. } = &self.inner.target else { return };
        let announcement = format!("{master} ");
        loop {
            let mut poll = tokio::time::interval(POLL_EVERY);
            match self.subscribe_to_any(sentinels).await {
                Some(pubsub) => {
                    let mut messages = pubsub.into_on_message();
                    loop {
                        tokio::select! {
                            msg = messages.next() => match msg {
                                // "<name> <old ip> <old port> <new ip> <new port>"
                                Some(m) => if m.get_payload::<String>().is_ok_and(|p| p.starts_with(&announcement)) {
                                    self.follow_master().await;
                                },
                                None => break,
                            },
                            _ = poll.tick() => self.follow_master().await,
                        }
                    }
                }
                None => {
                    poll.tick().await;
                    self.follow_master().await;
                }
            }
            tokio::time::sleep(PROBE_INTERVAL).await;
        }
    }

    async fn subscribe_to_any(&self, sentinels: &[String]) -> Option<redis::aio::PubSub> {
        for url in sentinels {
            let Ok(client) = redis::Client::open(url.as_str()) else { continue };
            let Ok(Ok(mut pubsub)) = tokio::time::timeout(self.inner.timeouts.connect, client.get_async_pubsub()).await else { continue };
            if pubsub.subscribe("+switch-master").await.is_ok() {
                return Some(pubsub);
            }
        }
        None
    }
}
