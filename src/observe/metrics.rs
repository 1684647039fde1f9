//! Prometheus metrics, served as text at `GET /metrics` on the admin listener. One process-wide
//! registry ([`metrics()`]); the request path only bumps atomics (the `prometheus` crate's
//! counters and histograms), and label values are bounded: methods and status classes are
//! fixed sets, auth outcomes an enum, and route templates are capped (see [`RouteLabels`]).

use std::collections::HashMap;
use std::sync::{OnceLock, RwLock};

use prometheus::{Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder};

/// `1xx`…`5xx` for an HTTP status, `None` outside 100–599 (the metrics' label and the
/// analytics hash fields `status_{class}` both come from here).
pub fn status_class(status: u16) -> Option<&'static str> {
    Some(match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        500..=599 => "5xx",
        _ => return None,
    })
}

/// Route templates admitted as `route` label values unless `server.metrics_max_routes` says
/// otherwise.
pub const DEFAULT_ROUTE_CAP: usize = 200;

/// A fixed set of label values (an enum of a layer above, such as the identity layer's auth
/// outcomes, which this module does not import): each value knows its index, so the request path
/// bumps a counter handle made once instead of hashing the label every time.
pub trait FixedLabel: Copy {
    /// `0..n` for the n values of the set.
    fn index(self) -> usize;
    fn as_str(self) -> &'static str;
}

/// Counter handles cached per [`FixedLabel`] index; values beyond it are counted uncached.
const FIXED_LABEL_CELLS: usize = 32;

/// Label value for route templates beyond the cap.
pub const OTHER_ROUTE: &str = "other";

/// Latency buckets (seconds) for requests, upstream calls, Kratos and Redis.
const LATENCY_BUCKETS: &[f64] = &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

pub struct Metrics {
    registry: Registry,
    /// `method`, `status_class` (`2xx`…), `route` (template, capped).
    pub requests: IntCounterVec,
    pub request_seconds: Histogram,
    pub upstream_seconds: Histogram,
    /// `outcome`: how the caller was identified (the identity layer's `AuthOutcome`).
    pub auth_outcomes: IntCounterVec,
    /// `result`: `ok`, `unauthenticated`, `aal2_required`, `error`, `circuit_open`.
    pub kratos_calls: IntCounterVec,
    pub kratos_seconds: Histogram,
    /// 0 closed, 1 open (calls short-circuited), 2 half-open.
    pub kratos_circuit_state: IntGauge,
    /// `op`: `query`, `pipeline`.
    pub redis_seconds: HistogramVec,
    pub redis_errors: IntCounterVec,
    /// Sentinel named another master and the connection moved to it.
    pub redis_master_changes: IntCounter,
    /// Session sweeps by `outcome`: `swept`, `other_instance` (its turn was taken), `failed`.
    pub sweeps: IntCounterVec,
    pub analytics_queued: IntCounter,
    pub analytics_written: IntCounter,
    pub analytics_retried: IntCounter,
    /// Acknowledged batches sent again because a failover lost them.
    pub analytics_batches_resent: IntCounter,
    pub analytics_dropped: IntCounter,
    /// Access log lines dropped because the log's queue was full.
    pub access_log_dropped: IntCounter,
    /// Requests of new anonymous sessions over their client's limit: counted, not recorded.
    pub analytics_sessions_refused: IntCounter,
    /// `result`: `delivered`, `retried`, `failed`, `duplicate`, `logged` (security alerts).
    pub alerts: IntCounterVec,
    /// Stored personal fields no configured key could decrypt (wrong key, altered token).
    pub field_decrypt_errors: IntCounter,
    pub analytics_batch_events: Histogram,
    pub active_sessions: IntGauge,
    routes: RouteLabels,
    /// `auth_outcomes` by [`FixedLabel::index`], made on first use.
    outcome_cells: [OnceLock<IntCounter>; FIXED_LABEL_CELLS],
}

/// The `method` label values; anything else is `OTHER`.
const METHODS: [&str; 8] = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "OTHER"];
/// The `status_class` label values; `none` when no response was written.
const CLASSES: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "none"];

/// One route's request counters, one per method and status class, made on first use: the
/// request path then bumps an atomic without hashing label values again.
#[derive(Default)]
struct RouteCounters {
    cells: [[OnceLock<IntCounter>; CLASSES.len()]; METHODS.len()],
}

/// Route templates admitted as label values: the first `cap` distinct ones, for the process's
/// life; later ones are counted as [`OTHER_ROUTE`], so a scan of random paths cannot blow up
/// the series count.
pub struct RouteLabels {
    cap: usize,
    seen: RwLock<HashMap<String, RouteCounters>>,
    other: RouteCounters,
}

impl RouteLabels {
    pub fn new(cap: usize) -> Self {
        Self { cap, seen: RwLock::new(HashMap::new()), other: RouteCounters::default() }
    }

    /// Calls `f` with the route's label and its counters, admitting `template` if there is room.
    fn with<R>(&self, template: &str, f: impl FnOnce(&str, &RouteCounters) -> R) -> R {
        if let Ok(seen) = self.seen.read() {
            if let Some(c) = seen.get(template) {
                return f(template, c);
            }
        }
        let Ok(mut seen) = self.seen.write() else { return f(OTHER_ROUTE, &self.other) };
        if !seen.contains_key(template) && seen.len() >= self.cap {
            return f(OTHER_ROUTE, &self.other);
        }
        let c = seen.entry(template.to_owned()).or_default();
        f(template, c)
    }
}

static METRICS: OnceLock<Metrics> = OnceLock::new();

/// Sets the route-label cap; the first call wins (call it at start-up, before traffic).
pub fn init(route_cap: usize) -> &'static Metrics {
    METRICS.get_or_init(|| Metrics::new(route_cap))
}

/// The process's metrics (with the default cap if [`init`] was not called).
pub fn metrics() -> &'static Metrics {
    init(DEFAULT_ROUTE_CAP)
}

fn histogram(name: &str, help: &str) -> Histogram {
    Histogram::with_opts(HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec())).expect("valid histogram")
}

impl Metrics {
    fn new(route_cap: usize) -> Self {
        let counter_vec = |name: &str, help: &str, labels: &[&str]| IntCounterVec::new(Opts::new(name, help), labels).expect("valid counter");
        let counter = |name: &str, help: &str| IntCounter::new(name, help).expect("valid counter");
        let m = Metrics {
            registry: Registry::new_custom(Some("sting".into()), None).expect("valid registry"),
            requests: counter_vec("requests_total", "Requests answered, by method, status class and route template.", &["method", "status_class", "route"]),
            request_seconds: histogram("request_duration_seconds", "Time from request arrival to the end of the response."),
            upstream_seconds: histogram("upstream_duration_seconds", "Time spent on the app: from sending the request upstream to its response header."),
            auth_outcomes: counter_vec("auth_outcomes_total", "How requests were identified.", &["outcome"]),
            kratos_calls: counter_vec("kratos_calls_total", "Kratos whoami calls by result.", &["result"]),
            kratos_seconds: histogram("kratos_call_duration_seconds", "Kratos whoami latency."),
            kratos_circuit_state: IntGauge::new("kratos_circuit_state", "Kratos circuit breaker: 0 closed, 1 open, 2 half-open.").expect("valid gauge"),
            redis_seconds: HistogramVec::new(
                HistogramOpts::new("redis_command_duration_seconds", "Redis round trips from the proxy's shared connection.").buckets(LATENCY_BUCKETS.to_vec()),
                &["op"],
            )
            .expect("valid histogram"),
            redis_errors: counter_vec("redis_errors_total", "Redis round trips that failed or timed out.", &["op"]),
            sweeps: counter_vec(
                "session_sweeps_total",
                "Session sweeps by outcome: swept, other_instance (another instance had the turn), failed.",
                &["outcome"],
            ),
            redis_master_changes: counter("redis_master_changes_total", "Times Sentinel named another Redis master and the proxy's connection moved to it."),
            analytics_queued: counter("analytics_events_queued_total", "Analytics events handed to the writer."),
            analytics_written: counter("analytics_events_written_total", "Analytics events written to Redis."),
            analytics_batches_resent: counter(
                "analytics_batches_resent_total",
                "Acknowledged analytics batches sent again because a Redis failover lost them (async replication).",
            ),
            analytics_retried: counter("analytics_batch_retries_total", "Analytics batch writes retried after a transient error."),
            analytics_dropped: counter("analytics_events_dropped_total", "Analytics events lost: queue full, or a batch that could not be written."),
            access_log_dropped: counter(
                "access_log_lines_dropped_total",
                "Access log lines dropped: the log's queue was full (the disk or stdout could not keep up).",
            ),
            analytics_sessions_refused: counter(
                "analytics_sessions_refused_total",
                "Requests of new anonymous sessions over their client's per-minute limit: in the totals, without a session record.",
            ),
            alerts: counter_vec(
                "security_alerts_total",
                "Security alerts: webhook deliveries (delivered, retried, failed, duplicate) and log lines (logged).",
                &["result"],
            ),
            field_decrypt_errors: counter(
                "field_decrypt_errors_total",
                "Encrypted personal fields read from Redis that no key in analytics.encryption_keys could decrypt (wrong key or altered token).",
            ),
            analytics_batch_events: Histogram::with_opts(
                HistogramOpts::new("analytics_batch_events", "Events per analytics batch.").buckets(vec![1.0, 10.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 5000.0]),
            )
            .expect("valid histogram"),
            active_sessions: IntGauge::new("active_sessions", "Active sessions (SCARD sting:active:sessions), refreshed by /metrics scrapes.")
                .expect("valid gauge"),
            routes: RouteLabels::new(route_cap),
            outcome_cells: Default::default(),
        };
        let build = IntGaugeVec::new(Opts::new("build_info", "The running build."), &["version"]).expect("valid gauge");
        build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        let r = &m.registry;
        let all: Vec<Box<dyn prometheus::core::Collector>> = vec![
            Box::new(m.requests.clone()),
            Box::new(m.request_seconds.clone()),
            Box::new(m.upstream_seconds.clone()),
            Box::new(m.auth_outcomes.clone()),
            Box::new(m.kratos_calls.clone()),
            Box::new(m.kratos_seconds.clone()),
            Box::new(m.kratos_circuit_state.clone()),
            Box::new(m.redis_seconds.clone()),
            Box::new(m.redis_errors.clone()),
            Box::new(m.redis_master_changes.clone()),
            Box::new(m.sweeps.clone()),
            Box::new(m.analytics_queued.clone()),
            Box::new(m.analytics_written.clone()),
            Box::new(m.analytics_retried.clone()),
            Box::new(m.analytics_batches_resent.clone()),
            Box::new(m.analytics_dropped.clone()),
            Box::new(m.access_log_dropped.clone()),
            Box::new(m.analytics_sessions_refused.clone()),
            Box::new(m.alerts.clone()),
            Box::new(m.field_decrypt_errors.clone()),
            Box::new(m.analytics_batch_events.clone()),
            Box::new(m.active_sessions.clone()),
            Box::new(build),
        ];
        for c in all {
            r.register(c).expect("metric names are unique");
        }
        m
    }

    /// Counts one answered request.
    pub fn request(&self, method: &http::Method, status: u16, template: &str, seconds: f64, upstream_seconds: Option<f64>, outcome: impl FixedLabel) {
        let class = status_class(status).and_then(|c| CLASSES.iter().position(|x| *x == c)).unwrap_or(CLASSES.len() - 1);
        let method = METHODS.iter().position(|m| *m == method.as_str()).unwrap_or(METHODS.len() - 1);
        self.routes.with(template, |route, counters| {
            counters.cells[method][class].get_or_init(|| self.requests.with_label_values(&[METHODS[method], CLASSES[class], route])).inc();
        });
        self.request_seconds.observe(seconds);
        if let Some(u) = upstream_seconds {
            self.upstream_seconds.observe(u);
        }
        match self.outcome_cells.get(outcome.index()) {
            Some(cell) => cell.get_or_init(|| self.auth_outcomes.with_label_values(&[outcome.as_str()])).inc(),
            None => self.auth_outcomes.with_label_values(&[outcome.as_str()]).inc(),
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Copy)]
    enum Outcome {
        Anonymous,
        KratosRateLimited,
    }

    impl FixedLabel for Outcome {
        fn index(self) -> usize {
            self as usize
        }

        fn as_str(self) -> &'static str {
            match self {
                Outcome::Anonymous => "anonymous",
                Outcome::KratosRateLimited => "kratos_rate_limited",
            }
        }
    }

    #[test]
    fn route_labels_are_capped() {
        let r = RouteLabels::new(2);
        let label = |t: &str| r.with(t, |label, _| label.to_owned());
        assert_eq!(label("/a"), "/a");
        assert_eq!(label("/b"), "/b");
        assert_eq!(label("/c"), OTHER_ROUTE);
        assert_eq!(label("/a"), "/a", "admitted routes keep their label");
    }

    #[test]
    fn renders_prometheus_text() {
        let m = Metrics::new(10);
        m.request(&http::Method::GET, 200, "/x", 0.002, Some(0.001), Outcome::Anonymous);
        m.request(&http::Method::GET, 200, "/x", 0.002, Some(0.001), Outcome::KratosRateLimited);
        m.request(&http::Method::from_bytes(b"PURGE").unwrap(), 0, "/x", 0.002, None, Outcome::Anonymous);
        let text = String::from_utf8(m.render()).unwrap();
        assert!(text.contains(r#"sting_requests_total{method="GET",route="/x",status_class="2xx"} 2"#), "{text}");
        assert!(text.contains(r#"sting_requests_total{method="OTHER",route="/x",status_class="none"} 1"#), "{text}");
        assert!(text.contains(r#"sting_auth_outcomes_total{outcome="anonymous"} 2"#), "{text}");
        assert!(text.contains(r#"sting_auth_outcomes_total{outcome="kratos_rate_limited"} 1"#), "{text}");
        assert!(text.contains("sting_request_duration_seconds_bucket"));
        assert!(text.contains(r#"sting_build_info{version=""#));
    }
}
