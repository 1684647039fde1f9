//! The Redis handle shared by the request path, the admin endpoints and background work. I/O.
//!
//! Cloning a [`RedisStore`] is shallow (one `Arc`). Its connection (see [`super::connection`])
//! is a redis-rs `ConnectionManager` to one server (standalone, or the master Sentinel names
//! now) or a cluster connection that routes each command by slot; both reconnect by themselves.
//! It is made by [`RedisStore::connect_forever`], run as a background service, so the proxy
//! starts and serves public routes even when Redis is down at boot (fail open for public routes,
//! see `docs/operations.md`). Until then every call fails fast with [`StoreError::NotConnected`].
//!
//! Fail fast while Redis is down: once a call fails for want of Redis (connection refused or
//! dropped, or [`TIMEOUTS_TO_TRIP`] calls in a row without an answer in time: one slow reply
//! alone does not trip it), the next calls fail at once with [`StoreError::Down`]
//! instead of each waiting out the command timeout; one probe call per [`PROBE_INTERVAL`]
//! goes through, and the first that succeeds ends the outage (the circuit-breaker idea).
//!
//! Sentinel: a call that finds the master unreachable, or answers `READONLY` (the old master,
//! back as a replica), makes the store ask the sentinels again, at most once per
//! [`PROBE_INTERVAL`]; when they name another master, the connection moves to it.

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
use redis::FromRedisValue;

use crate::config::redis_target::{RedisMode, RedisTarget};
use crate::store::circuit_breaker::{CircuitBreaker, CircuitState};
use crate::store::connection::{self, ClusterMaster, StoreConnection, Timeouts};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("not connected to Redis yet")]
    NotConnected,
    #[error("Redis did not answer within {0:?}")]
    Timeout(Duration),
    /// A recent call found Redis unreachable; not asked again until the next probe.
    #[error("Redis is unreachable (failing fast until a probe succeeds)")]
    Down,
    #[error("Redis error: {0}")]
    Redis(#[from] redis::RedisError),
}

/// Records one round trip in the metrics.
fn observe(op: &'static str, started: std::time::Instant, ok: bool) {
    let m = crate::observe::metrics::metrics();
    m.redis_seconds.with_label_values(&[op]).observe(started.elapsed().as_secs_f64());
    if !ok {
        m.redis_errors.with_label_values(&[op]).inc();
    }
}

/// What a [`Scanner`] walks.
#[derive(Debug, Clone, Copy)]
pub enum Scan<'a> {
    /// Keys matching a `MATCH` pattern (on every master of a cluster).
    Keys(&'a str),
    /// The members of a set.
    Set(&'a str),
    /// The members of a sorted set.
    SortedSet(&'a str),
    /// The fields and values of a hash, flattened: `[field, value, field, value, ...]`.
    Hash(&'a str),
}

#[derive(Clone)]
pub struct RedisStore {
    pub(super) inner: Arc<Inner>,
}

pub(super) struct Inner {
    pub(super) target: RedisTarget,
    pub(super) timeouts: Timeouts,
    /// The cluster client may send a request again after a connection error (see
    /// [`connection::cluster`]); off for exactly-once writers ([`RedisStore::exactly_once`]).
    resend: bool,
    conn: RwLock<Option<StoreConnection>>,
    /// Open while Redis is unreachable: calls fail fast, one probe per [`PROBE_INTERVAL`].
    breaker: CircuitBreaker,
    /// Sentinel: the address of the master the connection goes to, a search for the master
    /// under way, and when the sentinels were last asked (see `sentinel_watch`).
    pub(super) master: Mutex<Option<redis::Client>>,
    /// Counts the moves of the connection to another server (a Sentinel failover followed).
    pub(super) generation: std::sync::atomic::AtomicU64,
    pub(super) finding_master: AtomicBool,
    pub(super) last_asked: Mutex<Option<Instant>>,
}

/// While Redis is down, one call per interval is let through to find out whether it is back.
pub const PROBE_INTERVAL: Duration = Duration::from_millis(250);

/// Timeouts in a row that count as Redis being unreachable.
pub const TIMEOUTS_TO_TRIP: u32 = 3;

impl Inner {
    /// Records how a call went: a refused or dropped connection opens the breaker at once,
    /// [`TIMEOUTS_TO_TRIP`] timeouts in a row open it; any answer from Redis, even an error
    /// reply, closes it.
    fn record<T>(&self, r: &Result<T, StoreError>) {
        let was = self.breaker.state();
        match r {
            Err(StoreError::Timeout(_)) => self.breaker.record_failure(),
            // One cluster master down must not fail the calls bound for the others: there it
            // takes failures in a row (no success in between) to open the breaker.
            Err(e) if e.means_unreachable() && self.target.mode() == RedisMode::Cluster => self.breaker.record_failure(),
            Err(e) if e.means_unreachable() => self.breaker.trip(),
            _ => self.breaker.record_success(),
        }
        match (was, self.breaker.state()) {
            (CircuitState::Closed, CircuitState::Open) => {
                if let Err(e) = r {
                    tracing::warn!(error = %e, "Redis unreachable: failing fast until a probe succeeds");
                }
            }
            (CircuitState::Open | CircuitState::HalfOpen, CircuitState::Closed) => tracing::info!("Redis reachable again"),
            _ => {}
        }
    }

    fn connection(&self) -> Option<StoreConnection> {
        self.conn.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub(super) fn set_connection(&self, c: StoreConnection) {
        *self.conn.write().unwrap_or_else(|e| e.into_inner()) = Some(c);
    }
}

impl StoreError {
    /// Worth retrying: the connection or Redis itself was briefly unavailable (a cluster
    /// promoting a replica, a Sentinel master that moved). Anything else (a script error, a
    /// wrong type) would fail the same way again.
    pub fn is_transient(&self) -> bool {
        match self {
            StoreError::NotConnected | StoreError::Timeout(_) | StoreError::Down => true,
            StoreError::Redis(e) => {
                e.is_io_error()
                    || e.is_timeout()
                    || e.is_connection_dropped()
                    || e.is_connection_refusal()
                    || e.code() == Some("NOREPLICAS")
                    || matches!(
                        e.kind(),
                        redis::ErrorKind::BusyLoadingError
                            | redis::ErrorKind::TryAgain
                            | redis::ErrorKind::ClusterDown
                            | redis::ErrorKind::MasterDown
                            | redis::ErrorKind::ReadOnly
                            | redis::ErrorKind::Moved
                            | redis::ErrorKind::Ask
                            | redis::ErrorKind::ClusterConnectionNotFound
                    )
            }
        }
    }

    /// Redis could not be reached (as opposed to answering with an error).
    fn means_unreachable(&self) -> bool {
        match self {
            StoreError::Timeout(_) | StoreError::Down => true,
            StoreError::NotConnected => false,
            StoreError::Redis(e) => e.is_io_error() || e.is_timeout() || e.is_connection_dropped() || e.is_connection_refusal(),
        }
    }

    /// The server that answered is no master (any more), or a master cut off from its
    /// replicas (`min-replicas-to-write`): a Sentinel failover is under way.
    fn means_master_moved(&self) -> bool {
        matches!(self, StoreError::Redis(e) if e.kind() == redis::ErrorKind::ReadOnly || e.code() == Some("NOREPLICAS"))
    }
}

impl RedisStore {
    /// A handle for `target`; does no I/O until [`RedisStore::connect_forever`] runs.
    pub fn new(target: &RedisTarget, connect_timeout: Duration, command_timeout: Duration) -> redis::RedisResult<Self> {
        match target {
            RedisTarget::Standalone { url } => {
                redis::Client::open(url.as_str())?;
            }
            RedisTarget::Cluster { .. } => {
                crate::store::keys::use_cluster_layout().map_err(|m| redis::RedisError::from((redis::ErrorKind::InvalidClientConfig, m)))?
            }
            RedisTarget::Sentinel { .. } => {}
        }
        Ok(Self {
            inner: Arc::new(Inner {
                target: target.clone(),
                timeouts: Timeouts { connect: connect_timeout, command: command_timeout },
                resend: true,
                conn: RwLock::new(None),
                breaker: CircuitBreaker::new(TIMEOUTS_TO_TRIP, PROBE_INTERVAL),
                master: Mutex::new(None),
                generation: std::sync::atomic::AtomicU64::new(0),
                finding_master: AtomicBool::new(false),
                last_asked: Mutex::new(None),
            }),
        })
    }

    /// This handle's writes must land once: no request is sent again after a connection error
    /// behind the caller's back (the cluster client would, and a `MULTI`/`EXEC` whose reply was
    /// lost would then be applied twice); the caller retries after checking. Call before
    /// connecting.
    pub fn exactly_once(mut self) -> Self {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.resend = false;
        }
        self
    }

    /// How many times the connection moved to another server (a Sentinel failover followed):
    /// writes acknowledged before a move may be missing after it.
    pub fn generation(&self) -> u64 {
        self.inner.generation.load(std::sync::atomic::Ordering::Acquire)
    }

    pub fn mode(&self) -> RedisMode {
        self.inner.target.mode()
    }

    /// Connects, retrying with capped backoff until it succeeds; later drops are repaired by the
    /// connection itself.
    pub async fn connect_forever(&self) {
        let mut delay = Duration::from_millis(100);
        while let Err(e) = self.connect_once().await {
            tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "Redis unreachable");
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(5));
        }
    }

    /// One connection attempt (the ops CLI's: it reports a failure instead of waiting).
    pub async fn connect_once(&self) -> Result<(), StoreError> {
        if self.is_connected() {
            return Ok(());
        }
        let (conn, master) = self.open().await?;
        let mut slot = self.inner.conn.write().unwrap_or_else(|e| e.into_inner());
        if slot.is_none() {
            *slot = Some(conn);
            *self.inner.master.lock().unwrap_or_else(|e| e.into_inner()) = master;
            tracing::info!(redis = %self.inner.target.describe(), "connected to Redis");
            if self.mode() == RedisMode::Sentinel {
                // On the runtime that drives the connection: it lives as long as it does.
                tokio::spawn(self.clone().watch_sentinels());
            }
        }
        Ok(())
    }

    /// A new connection of the store's kind, apart from the shared one: for work that must not
    /// queue behind (or in front of) the request path's commands.
    pub async fn dedicated(&self) -> Result<StoreConnection, StoreError> {
        Ok(self.open().await?.0)
    }

    /// A new connection, and for Sentinel a client for the master it goes to.
    async fn open(&self) -> Result<(StoreConnection, Option<redis::Client>), StoreError> {
        let t = self.inner.timeouts;
        Ok(match &self.inner.target {
            RedisTarget::Standalone { url } => (StoreConnection::Single(connection::single(redis::Client::open(url.as_str())?, t).await?), None),
            RedisTarget::Cluster { seeds } => (StoreConnection::Cluster(connection::cluster(seeds, t, self.inner.resend).await?), None),
            RedisTarget::Sentinel { .. } => {
                let client = connection::sentinel_master(&self.inner.target, t).await?;
                (StoreConnection::Single(connection::single(client.clone(), t).await?), Some(client))
            }
        })
    }

    /// The deadline of one command.
    pub fn command_timeout(&self) -> Duration {
        self.inner.timeouts.command
    }

    pub fn is_connected(&self) -> bool {
        self.inner.conn.read().unwrap_or_else(|e| e.into_inner()).is_some()
    }

    /// Runs one command within the command timeout.
    pub async fn query<T: FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, StoreError> {
        self.round_trip("query", self.inner.timeouts.command, |mut conn| async move { cmd.query_async(&mut conn).await }).await
    }

    /// Runs one pipeline (one round trip) within the command timeout. On a cluster every
    /// command of a pipeline must hash to one slot (every owned key does, see `keys`); for
    /// commands on keys of different slots (the app's session keys), use [`Self::query_each`].
    pub async fn pipeline<T: FromRedisValue>(&self, pipe: &redis::Pipeline) -> Result<T, StoreError> {
        self.pipeline_within(pipe, self.inner.timeouts.command).await
    }

    /// Runs one pipeline within `timeout` (background batches may take longer than a request may).
    pub async fn pipeline_within<T: FromRedisValue>(&self, pipe: &redis::Pipeline, timeout: Duration) -> Result<T, StoreError> {
        self.round_trip("pipeline", timeout, |mut conn| async move { pipe.query_async(&mut conn).await }).await
    }

    /// Runs single-key commands whose keys may lie in different cluster slots, and answers in
    /// their order: one pipeline on one server, concurrent commands (routed each by its key)
    /// on a cluster. Not atomic.
    pub async fn query_each<T: FromRedisValue>(&self, cmds: &[redis::Cmd], timeout: Duration) -> Result<Vec<T>, StoreError> {
        if cmds.is_empty() {
            return Ok(Vec::new());
        }
        if self.mode() != RedisMode::Cluster {
            let mut pipe = redis::pipe();
            for c in cmds {
                pipe.add_command(c.clone());
            }
            return self.pipeline_within(&pipe, timeout).await;
        }
        futures_util::future::try_join_all(
            cmds.iter().map(|c| self.round_trip("query", timeout, move |mut conn| async move { c.query_async(&mut conn).await })),
        )
        .await
    }

    /// One round trip: fails fast while Redis is down, bounds the wait, records the outcome.
    async fn round_trip<T, F, Fut>(&self, op: &'static str, timeout: Duration, call: F) -> Result<T, StoreError>
    where
        F: FnOnce(StoreConnection) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        let conn = self.inner.connection().ok_or(StoreError::NotConnected)?;
        if !self.inner.breaker.allow() {
            observe("fail_fast", Instant::now(), false);
            self.find_master_if_sentinel();
            return Err(StoreError::Down);
        }
        let started = Instant::now();
        let r = match tokio::time::timeout(timeout, call(conn)).await {
            Ok(r) => r.map_err(StoreError::from),
            Err(_) => Err(StoreError::Timeout(timeout)),
        };
        self.inner.record(&r);
        observe(op, started, r.is_ok());
        if let Err(e) = &r {
            if e.means_unreachable() || e.means_master_moved() {
                self.find_master_if_sentinel();
            }
        }
        r
    }

    /// The masters of a cluster, read from `CLUSTER NODES`; empty for one server. An answer
    /// naming none is an error: a walk over "every master" must not silently walk nothing.
    pub async fn cluster_masters(&self) -> Result<Vec<ClusterMaster>, StoreError> {
        if self.mode() != RedisMode::Cluster {
            return Ok(Vec::new());
        }
        let nodes: String = self.query(redis::cmd("CLUSTER").arg("NODES")).await?;
        let masters = connection::parse_cluster_masters(&nodes);
        if masters.is_empty() {
            return Err(StoreError::Redis((redis::ErrorKind::ClusterDown, "CLUSTER NODES names no master serving slots").into()));
        }
        Ok(masters)
    }

    /// A client for each server holding part of the keyspace, for subscriptions and checks:
    /// the one server, the Sentinel master the store follows (asked of the sentinels only
    /// before it first connected), or every cluster master.
    pub async fn node_clients(&self) -> Result<Vec<redis::Client>, StoreError> {
        Ok(match &self.inner.target {
            RedisTarget::Standalone { url } => vec![redis::Client::open(url.as_str())?],
            RedisTarget::Sentinel { .. } => {
                let followed = self.inner.master.lock().unwrap_or_else(|e| e.into_inner()).clone();
                match followed {
                    Some(client) => vec![client],
                    None => vec![connection::sentinel_master(&self.inner.target, self.inner.timeouts).await?],
                }
            }
            RedisTarget::Cluster { seeds } => {
                let seed = seeds.first().map(String::as_str).unwrap_or_default();
                match self.cluster_masters().await {
                    Ok(masters) => masters.iter().map(|m| connection::node_client(seed, &m.host, m.port)).collect::<Result<_, _>>()?,
                    // Before the first connection: the seeds are the cluster's nodes too.
                    Err(StoreError::NotConnected) => seeds.iter().map(|s| redis::Client::open(s.as_str())).collect::<Result<_, _>>()?,
                    Err(e) => return Err(e),
                }
            }
        })
    }

    /// Runs `cmd` on one cluster master (`SCAN` is per node), routed by a slot it serves; on
    /// one server, just runs it.
    async fn query_on<T: FromRedisValue>(&self, cmd: &redis::Cmd, node: Option<&ClusterMaster>) -> Result<T, StoreError> {
        let Some(master) = node else { return self.query(cmd).await };
        self.query_routed(cmd, RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(Route::new(master.slot, SlotAddr::Master)))).await
    }

    /// Runs `cmd` where `routing` says on a cluster (instead of where its key, or its name,
    /// would send it); on one server, just runs it.
    async fn query_routed<T: FromRedisValue>(&self, cmd: &redis::Cmd, routing: RoutingInfo) -> Result<T, StoreError> {
        self.round_trip("query", self.inner.timeouts.command, |conn| async move {
            match conn {
                StoreConnection::Cluster(mut c) => T::from_redis_value(&c.route_command(cmd, routing).await?),
                StoreConnection::Single(mut c) => cmd.query_async(&mut c).await,
            }
        })
        .await
    }

    /// A walk over keys (`SCAN MATCH`, on every master of a cluster), a set (`SSCAN`) or a
    /// sorted set (`ZSCAN`, scores dropped) in batches of about `count`; see
    /// [`Scanner::next_batch`].
    pub fn scanner<'a>(&'a self, what: Scan<'a>, count: usize) -> Scanner<'a> {
        Scanner { store: self, what, count, cursor: 0, done: false, nodes: None }
    }

    /// `PING`, for readiness: the one server, or on a cluster any master (a cluster client
    /// would otherwise ask every master, and one master down would make every proxy unready).
    pub async fn ping(&self) -> Result<(), StoreError> {
        let pong: String = self.query_routed(&redis::cmd("PING"), RoutingInfo::SingleNode(SingleNodeRoutingInfo::RandomPrimary)).await?;
        if pong == "PONG" {
            Ok(())
        } else {
            Err(StoreError::Redis(redis::RedisError::from((redis::ErrorKind::ResponseError, "unexpected PING reply"))))
        }
    }
}

/// A `SCAN`-family walk, one round trip per batch. Like every SCAN, an element may come twice;
/// callers must tolerate that.
pub struct Scanner<'a> {
    store: &'a RedisStore,
    what: Scan<'a>,
    count: usize,
    cursor: u64,
    done: bool,
    /// A key scan on a cluster: the masters still to walk, the current one last.
    nodes: Option<Vec<ClusterMaster>>,
}

impl Scanner<'_> {
    /// The next non-empty batch, or `None` when the walk is complete.
    pub async fn next_batch(&mut self) -> Result<Option<Vec<String>>, StoreError> {
        if matches!(self.what, Scan::Keys(_)) && self.store.mode() == RedisMode::Cluster && self.nodes.is_none() {
            let mut masters = self.store.cluster_masters().await?;
            masters.reverse();
            self.nodes = Some(masters);
        }
        while !self.done {
            let mut cmd = match self.what {
                Scan::Keys(_) => redis::cmd("SCAN"),
                Scan::Set(key) => redis::cmd("SSCAN").arg(key).clone(),
                Scan::SortedSet(key) => redis::cmd("ZSCAN").arg(key).clone(),
                Scan::Hash(key) => redis::cmd("HSCAN").arg(key).clone(),
            };
            cmd.arg(self.cursor);
            if let Scan::Keys(pattern) = self.what {
                cmd.arg("MATCH").arg(pattern);
            }
            cmd.arg("COUNT").arg(self.count);
            let node = self.nodes.as_ref().and_then(|n| n.last());
            let (next, raw): (u64, Vec<String>) = self.store.query_on(&cmd, node).await?;
            self.cursor = next;
            if next == 0 {
                match self.nodes.as_mut() {
                    Some(nodes) => {
                        nodes.pop();
                        self.done = nodes.is_empty();
                    }
                    None => self.done = true,
                }
            }
            let batch: Vec<String> = if matches!(self.what, Scan::SortedSet(_)) { raw.into_iter().step_by(2).collect() } else { raw };
            if !batch.is_empty() {
                return Ok(Some(batch));
            }
        }
        Ok(None)
    }
}
