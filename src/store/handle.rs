//! The Redis handle shared by the request path, the admin endpoints and background work. I/O.
//!
//! Cloning a [`RedisStore`] is shallow (one `Arc`). The connection is a redis-rs
//! `ConnectionManager` (one multiplexed connection that reconnects by itself). It is made by
//! [`RedisStore::connect_forever`], run as a background service, so the proxy starts and serves
//! public routes even when Redis is down at boot (fail open for public routes, see
//! `docs/operations.md`). Until then every call fails fast with [`StoreError::NotConnected`].
//!
//! Fail fast while Redis is down: once a call fails for want of Redis (connection refused or
//! dropped, or [`TIMEOUTS_TO_TRIP`] calls in a row without an answer in time: one slow reply
//! alone does not trip it), the next calls fail at once with [`StoreError::Down`]
//! instead of each waiting out the command timeout; one probe call per [`PROBE_INTERVAL`]
//! goes through, and the first that succeeds ends the outage (the circuit-breaker idea).

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::FromRedisValue;

use crate::store::circuit_breaker::{CircuitBreaker, CircuitState};

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
    /// Keys matching a `MATCH` pattern.
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
    inner: Arc<Inner>,
}

struct Inner {
    client: redis::Client,
    conn: OnceLock<ConnectionManager>,
    connect_timeout: Duration,
    command_timeout: Duration,
    /// Open while Redis is unreachable: calls fail fast, one probe per [`PROBE_INTERVAL`].
    breaker: CircuitBreaker,
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
}

impl StoreError {
    /// Worth retrying: the connection or Redis itself was briefly unavailable. Anything else
    /// (a script error, a wrong type) would fail the same way again.
    pub fn is_transient(&self) -> bool {
        match self {
            StoreError::NotConnected | StoreError::Timeout(_) | StoreError::Down => true,
            StoreError::Redis(e) => {
                e.is_io_error()
                    || e.is_timeout()
                    || e.is_connection_dropped()
                    || e.is_connection_refusal()
                    || matches!(e.kind(), redis::ErrorKind::BusyLoadingError | redis::ErrorKind::TryAgain)
            }
        }
    }
}

impl StoreError {
    /// Redis could not be reached (as opposed to answering with an error).
    fn means_unreachable(&self) -> bool {
        match self {
            StoreError::Timeout(_) | StoreError::Down => true,
            StoreError::NotConnected => false,
            StoreError::Redis(e) => e.is_io_error() || e.is_timeout() || e.is_connection_dropped() || e.is_connection_refusal(),
        }
    }
}

impl RedisStore {
    /// A handle for `url`; does no I/O until [`RedisStore::connect_forever`] runs.
    pub fn new(url: &str, connect_timeout: Duration, command_timeout: Duration) -> redis::RedisResult<Self> {
        Ok(Self {
            inner: Arc::new(Inner {
                client: redis::Client::open(url)?,
                conn: OnceLock::new(),
                connect_timeout,
                command_timeout,
                breaker: CircuitBreaker::new(TIMEOUTS_TO_TRIP, PROBE_INTERVAL),
            }),
        })
    }

    /// Connects, retrying with capped backoff until it succeeds; later drops are repaired by the
    /// `ConnectionManager` itself.
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
        if self.inner.conn.get().is_some() {
            return Ok(());
        }
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(self.inner.connect_timeout)
            .set_response_timeout(self.inner.command_timeout)
            .set_number_of_retries(2)
            .set_max_delay(500);
        let conn = ConnectionManager::new_with_config(self.inner.client.clone(), config).await?;
        if self.inner.conn.set(conn).is_ok() {
            tracing::info!("connected to Redis");
        }
        Ok(())
    }

    pub fn is_connected(&self) -> bool {
        self.inner.conn.get().is_some()
    }

    /// Runs one command within the command timeout.
    pub async fn query<T: FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, StoreError> {
        self.round_trip("query", self.inner.command_timeout, |mut conn| async move { cmd.query_async(&mut conn).await }).await
    }

    /// Runs one pipeline (one round trip) within the command timeout.
    pub async fn pipeline<T: FromRedisValue>(&self, pipe: &redis::Pipeline) -> Result<T, StoreError> {
        self.pipeline_within(pipe, self.inner.command_timeout).await
    }

    /// Runs one pipeline within `timeout` (background batches may take longer than a request may).
    pub async fn pipeline_within<T: FromRedisValue>(&self, pipe: &redis::Pipeline, timeout: Duration) -> Result<T, StoreError> {
        self.round_trip("pipeline", timeout, |mut conn| async move { pipe.query_async(&mut conn).await }).await
    }

    /// One round trip: fails fast while Redis is down, bounds the wait, records the outcome.
    async fn round_trip<T, F, Fut>(&self, op: &'static str, timeout: Duration, call: F) -> Result<T, StoreError>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        let conn = self.inner.conn.get().ok_or(StoreError::NotConnected)?.clone();
        if !self.inner.breaker.allow() {
            observe("fail_fast", Instant::now(), false);
            return Err(StoreError::Down);
        }
        let started = Instant::now();
        let r = match tokio::time::timeout(timeout, call(conn)).await {
            Ok(r) => r.map_err(StoreError::from),
            Err(_) => Err(StoreError::Timeout(timeout)),
        };
        self.inner.record(&r);
        observe(op, started, r.is_ok());
        r
    }

    /// A walk over keys (`SCAN MATCH`), a set (`SSCAN`) or a sorted set (`ZSCAN`, scores
    /// dropped) in batches of about `count`; see [`Scanner::next_batch`].
    pub fn scanner<'a>(&'a self, what: Scan<'a>, count: usize) -> Scanner<'a> {
        Scanner { store: self, what, count, cursor: 0, done: false }
    }

    /// `PING`, for readiness.
    pub async fn ping(&self) -> Result<(), StoreError> {
        let pong: String = self.query(&redis::cmd("PING")).await?;
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
}

impl Scanner<'_> {
    /// The next non-empty batch, or `None` when the walk is complete.
    pub async fn next_batch(&mut self) -> Result<Option<Vec<String>>, StoreError> {
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
            let (next, raw): (u64, Vec<String>) = self.store.query(&cmd).await?;
            self.cursor = next;
            self.done = next == 0;
            let batch: Vec<String> = if matches!(self.what, Scan::SortedSet(_)) { raw.into_iter().step_by(2).collect() } else { raw };
            if !batch.is_empty() {
                return Ok(Some(batch));
            }
        }
        Ok(None)
    }
}
