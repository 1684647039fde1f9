//! Noticing that sessions ended without a request saying so: Redis keyspace notifications for
//! the app's session keys (immediate), and a periodic sweep of `sting:active:sessions` (the
//! fallback, as the seed's `SessionCleanup`, and the idle timeout) and of the light records of
//! one-request sessions. Both feed the analytics writer; ending a session is idempotent, so
//! several instances may sweep at once. I/O.

use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use crate::capture::request_event::{CaptureEvent, EndReason};
use crate::capture::writer::CaptureHandle;
use crate::identity::session_id::SessionIds;
use crate::store::keys;
use crate::store::{connection, RedisStore, Scan, Scanner, StoreError};

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Subscribes to `expired` and `del` key events and ends the sessions whose app key went away.
/// On a cluster the events of a key come from the master holding it: it subscribes on every
/// master, and subscribes afresh when the masters change (a failover) or Sentinel names another
/// master. Events missed in between are the sweep's to find.
pub struct ExpiryListener {
    pub store: RedisStore,
    pub key_prefix: String,
    /// The app's key names the raw sid; analytics knows the published one.
    pub ids: SessionIds,
    pub capture: CaptureHandle,
}

/// How often the listener compares the servers it listens on with the current topology.
const TOPOLOGY_CHECK: Duration = Duration::from_secs(2);

impl ExpiryListener {
    async fn listen(&self) -> Result<(), StoreError> {
        let clients = self.store.node_clients().await?;
        let nodes: Vec<String> = clients.iter().map(connection::address_of).collect();
        let mut streams = Vec::with_capacity(clients.len());
        for client in &clients {
            let db = client.get_connection_info().redis.db;
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(&[format!("__keyevent@{db}__:expired"), format!("__keyevent@{db}__:del")]).await?;
            // Each stream ends with a `None` of its own: one server's subscription lost means
            // subscribing again, not listening to the others only.
            streams.push(pubsub.into_on_message().map(Some).chain(futures_util::stream::once(async { None })).boxed());
        }
        tracing::info!(servers = nodes.len(), "listening for session key expiry (keyspace notifications)");
        let mut messages = futures_util::stream::select_all(streams);
        let mut topology = tokio::time::interval(TOPOLOGY_CHECK);
        topology.tick().await;
        loop {
            tokio::select! {
                msg = messages.next() => {
                    let Some(Some(msg)) = msg else {
                        tracing::info!("a keyspace notification subscription ended: subscribing again");
                        return Ok(());
                    };
                    let Ok(key) = msg.get_payload::<String>() else { continue };
                    let Some(sid) = key.strip_prefix(self.key_prefix.as_str()) else { continue };
                    // `del` is the app's `session.clear()`: a logout; `expired` is the lifetime running out.
                    let reason = if msg.get_channel_name().ends_with(":del") { EndReason::Logout } else { EndReason::Expired };
                    self.capture.send(CaptureEvent::SessionEnded { sid: self.ids.publish(sid).into_owned(), ts_ms: now_ms(), reason }).await;
                }
                _ = topology.tick() => {
                    let now: Vec<String> = match self.store.node_clients().await {
                        Ok(c) => c.iter().map(connection::address_of).collect(),
                        Err(_) => continue,
                    };
                    if now != nodes {
                        tracing::info!(before = ?nodes, now = ?now, "Redis masters changed: subscribing again");
                        return Ok(());
                    }
                }
            }
        }
    }
}

#[async_trait]
impl BackgroundService for ExpiryListener {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        loop {
            tokio::select! {
                r = self.listen() => {
                    if let Err(e) = r {
                        tracing::warn!(error = %e, "keyspace notification listener lost; the sweep still ends sessions");
                    }
                }
                _ = shutdown.changed() => return,
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}

/// Walks the active set with `SSCAN` and ends sessions whose app key is gone or that went idle.
pub struct Sweeper {
    pub store: RedisStore,
    /// See [`find_ended`].
    pub key_prefix: Option<String>,
    pub interval: Duration,
    pub idle_timeout: Duration,
    /// The app's session lifetime: which light buckets can hold a live record.
    pub anonymous_ttl_secs: u64,
    pub capture: CaptureHandle,
    /// This instance, in [`keys::sweep_turn`].
    pub instance: String,
}

/// Active sessions examined per round trip.
pub const SWEEP_BATCH: usize = 500;

/// Fewest Flask sessions in one batch for [`find_ended`]'s guard to apply.
pub const GUARD_MIN_SESSIONS: usize = 3;

/// What [`find_ended`] decided about one batch.
#[derive(Debug, Default)]
pub struct Classified {
    /// Sessions looked at (light records that already ended are not).
    pub checked: usize,
    pub ended: Vec<(String, EndReason)>,
    /// Every Flask session of the batch lacked its app key: more likely a wrong
    /// `session.key_prefix` (or a flushed Redis) than that many expiries at once, so none
    /// was ended as expired. Idle sessions are still ended.
    pub suspicious_expiry: usize,
}

/// Which of `sids` (members of the active set) have ended at `now_ms`: their app session key is
/// gone (`Expired`; Kratos sessions have no app key) or they have been idle longer than
/// `idle_timeout_ms` (`Idle`). One round trip. `key_prefix` is `None` when published sids are
/// hashes (unsigned cookies): the app key cannot be named, so only the idle timeout (and the
/// expiry listener) end sessions.
pub async fn find_ended(
    store: &RedisStore,
    key_prefix: Option<&str>,
    idle_timeout_ms: i64,
    sids: &[String],
    now_ms: i64,
) -> Result<Classified, crate::store::StoreError> {
    if sids.is_empty() {
        return Ok(Classified::default());
    }
    let mut cmds = Vec::with_capacity(sids.len() * 2);
    for sid in sids {
        cmds.push(redis::cmd("HMGET").arg(keys::analytics_session(sid)).arg("last_time").arg("auth_source").clone());
        cmds.push(app_key_exists(key_prefix, sid));
    }
    // The app's keys lie in any slot of a cluster: not one pipeline there.
    let replies: Vec<redis::Value> = store.query_each(&cmds, Duration::from_secs(5)).await?;
    let rows = sids.iter().enumerate().map(|(i, sid)| {
        let (last, source): (Option<i64>, Option<String>) = redis::from_redis_value(&replies[2 * i]).unwrap_or((None, None));
        let exists: bool = redis::from_redis_value(&replies[2 * i + 1]).unwrap_or(true);
        Row { sid, last_ms: last, flask: source.as_deref() != Some("kratos"), app_key_exists: exists }
    });
    Ok(classify(rows, idle_timeout_ms, now_ms))
}

/// [`find_ended`] for light records (see `session_scripts::TOUCH`): `pairs` is a page of a light
/// bucket, `[sid, record, sid, record, ...]`. A light record's last activity is its start;
/// records that already ended are skipped.
pub async fn find_ended_light(
    store: &RedisStore,
    key_prefix: Option<&str>,
    idle_timeout_ms: i64,
    pairs: &[String],
    now_ms: i64,
) -> Result<Classified, crate::store::StoreError> {
    let live: Vec<(&String, Option<i64>)> = pairs
        .chunks_exact(2)
        .filter_map(|p| {
            let rec: Vec<serde_json::Value> = serde_json::from_str(&p[1]).unwrap_or_default();
            let ended = rec.len() > LIGHT_FIELDS;
            (!ended).then(|| (&p[0], rec.first().and_then(|v| v.as_str()).and_then(|v| v.parse().ok())))
        })
        .collect();
    if live.is_empty() {
        return Ok(Classified::default());
    }
    let cmds: Vec<redis::Cmd> = live.iter().map(|(sid, _)| app_key_exists(key_prefix, sid)).collect();
    let exists: Vec<redis::Value> = store.query_each(&cmds, Duration::from_secs(5)).await?;
    let rows =
        live.iter().zip(&exists).map(|((sid, start), e)| Row { sid, last_ms: *start, flask: true, app_key_exists: redis::from_redis_value(e).unwrap_or(true) });
    Ok(classify(rows, idle_timeout_ms, now_ms))
}

/// Fields of a light record that has not ended (`END` appends three).
const LIGHT_FIELDS: usize = 11;

/// `EXISTS` of the app's key for `sid`; without a prefix, a command that answers 1.
fn app_key_exists(key_prefix: Option<&str>, sid: &str) -> redis::Cmd {
    match key_prefix {
        Some(prefix) => redis::cmd("EXISTS").arg(keys::flask_session(prefix, sid)).clone(),
        None => redis::cmd("ECHO").arg(1).clone(),
    }
}

/// What the sweep knows about one session.
struct Row<'s> {
    sid: &'s str,
    last_ms: Option<i64>,
    /// A Flask session (it has an app key); Kratos sessions have none.
    flask: bool,
    app_key_exists: bool,
}

fn classify<'s>(rows: impl Iterator<Item = Row<'s>>, idle_timeout_ms: i64, now_ms: i64) -> Classified {
    let mut expired = Vec::new();
    let mut out = Classified::default();
    let mut flask = 0;
    for r in rows {
        out.checked += 1;
        flask += usize::from(r.flask);
        let idle = r.last_ms.is_none_or(|l| now_ms - l > idle_timeout_ms);
        if r.flask && !r.app_key_exists {
            expired.push((r.sid.to_owned(), idle));
        } else if idle {
            out.ended.push((r.sid.to_owned(), EndReason::Idle));
        }
    }
    if flask >= GUARD_MIN_SESSIONS && expired.len() == flask {
        out.suspicious_expiry = expired.len();
        out.ended.extend(expired.into_iter().filter(|(_, idle)| *idle).map(|(sid, _)| (sid, EndReason::Idle)));
    } else {
        out.ended.extend(expired.into_iter().map(|(sid, _)| (sid, EndReason::Expired)));
    }
    out
}

/// Every session the sweep must look at, page by page: the active set, then the light buckets
/// that can hold a live light record now. Shared by the sweep and `sting-proxy cleanup`.
pub struct EndedWalk<'a> {
    store: &'a RedisStore,
    key_prefix: Option<&'a str>,
    idle_timeout_ms: i64,
    sources: std::vec::IntoIter<Scan<'a>>,
    scan: Option<(Scanner<'a>, bool)>,
}

impl<'a> EndedWalk<'a> {
    /// `buckets` is [`keys::light_buckets`] of now (their live records; ended ones are in
    /// their `:ended` twins, which the walk does not read).
    pub fn new(store: &'a RedisStore, key_prefix: Option<&'a str>, idle_timeout_ms: i64, buckets: &'a [keys::LightBucket]) -> Self {
        let mut sources = vec![Scan::Set(keys::active_sessions())];
        sources.extend(buckets.iter().map(|b| Scan::Hash(&b.key)));
        EndedWalk { store, key_prefix, idle_timeout_ms, sources: sources.into_iter(), scan: None }
    }

    /// What ended among the next page of sessions.
    pub async fn next_page(&mut self) -> Result<Option<Classified>, crate::store::StoreError> {
        loop {
            if self.scan.is_none() {
                let Some(source) = self.sources.next() else { return Ok(None) };
                self.scan = Some((self.store.scanner(source, SWEEP_BATCH), matches!(source, Scan::Hash(_))));
            }
            let (scanner, light) = self.scan.as_mut().expect("set above");
            let light = *light;
            let Some(page) = scanner.next_batch().await? else {
                self.scan = None;
                continue;
            };
            let now = now_ms();
            return Ok(Some(if light {
                find_ended_light(self.store, self.key_prefix, self.idle_timeout_ms, &page, now).await?
            } else {
                find_ended(self.store, self.key_prefix, self.idle_timeout_ms, &page, now).await?
            }));
        }
    }
}

impl Sweeper {
    /// One pass over the active set and the light records; returns how many sessions it ended.
    pub async fn sweep_once(&self) -> Result<usize, crate::store::StoreError> {
        let mut ended = 0;
        let buckets = keys::light_buckets(now_ms(), self.anonymous_ttl_secs);
        let mut walk = EndedWalk::new(&self.store, self.key_prefix.as_deref(), self.idle_timeout.as_millis() as i64, &buckets);
        while let Some(found) = walk.next_page().await? {
            let now = now_ms();
            if found.suspicious_expiry > 0 {
                tracing::warn!(
                    sessions = found.suspicious_expiry,
                    key_prefix = self.key_prefix.as_deref().unwrap_or_default(),
                    "no Flask session of this sweep batch has its app key: not ending them as expired (check session.key_prefix)"
                );
            }
            for (sid, reason) in found.ended {
                ended += 1;
                self.capture.send(CaptureEvent::SessionEnded { sid, ts_ms: now, reason }).await;
            }
        }
        Ok(ended)
    }

    /// Takes this interval's sweep turn unless another instance holds it. The turn lasts a
    /// little less than the interval, so the instance whose timer fires first next time takes
    /// it again; one that dies hands it on when it expires.
    async fn take_turn(&self) -> Result<bool, crate::store::StoreError> {
        let ms = (self.interval.as_millis() as u64 * 9 / 10).max(1);
        let taken: Option<String> = self.store.query(redis::cmd("SET").arg(keys::sweep_turn()).arg(&self.instance).arg("NX").arg("PX").arg(ms)).await?;
        Ok(taken.is_some())
    }
}

#[async_trait]
impl BackgroundService for Sweeper {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let sweeps = &crate::observe::metrics::metrics().sweeps;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(self.interval) => {}
                _ = shutdown.changed() => return,
            }
            // `None`: another instance has this interval's turn.
            let swept = match self.take_turn().await {
                Ok(true) => self.sweep_once().await.map(Some),
                Ok(false) => Ok(None),
                Err(e) => Err(e),
            };
            match swept {
                Ok(Some(n)) => {
                    sweeps.with_label_values(&["swept"]).inc();
                    if n > 0 {
                        tracing::info!(ended = n, "sweep ended sessions");
                    }
                }
                Ok(None) => sweeps.with_label_values(&["other_instance"]).inc(),
                Err(e) => {
                    sweeps.with_label_values(&["failed"]).inc();
                    tracing::warn!(error = %e, "session sweep failed; will retry");
                }
            }
        }
    }
}
