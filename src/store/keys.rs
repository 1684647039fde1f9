//! Every Redis key the proxy reads or writes is spelled here and nowhere else. Pure functions,
//! but for one process-wide choice made once at start: the key layout.
//!
//! The Lua scripts in `session_scripts` receive their keys from these functions (as `KEYS`), and
//! the one key they must derive at run time (a user's active set, whose user id lives in the
//! session record) from [`active_user_prefix`].
//!
//! **Layouts.** On one Redis (standalone or Sentinel) every owned key starts with `sting:`, as
//! the seed's did. On a Redis Cluster ([`use_cluster_layout`]) they start with the hash tag
//! `{sting}:` instead, so every key the proxy's scripts and transactions touch together lives in
//! one hash slot: the exactly-once decisions (session start, user attach, end, anomaly) stay
//! single atomic scripts, and a batch stays one `MULTI`/`EXEC`. Two families are not tagged and
//! spread over the cluster's masters, because nothing touches them together with another key:
//! the app's Flask sessions (the app names them) and the Kratos answer cache
//! ([`kratos_cache`]), the two the request path reads.

use std::sync::OnceLock;

/// What every owned key starts with: `sting`, or `{sting}` in the cluster layout.
static ROOT: OnceLock<&'static str> = OnceLock::new();

/// The cluster layout's root: a hash tag, so Redis Cluster puts all owned keys in one slot.
pub const CLUSTER_ROOT: &str = "{sting}";

/// The standalone layout's root (the seed's names).
pub const STANDALONE_ROOT: &str = "sting";

/// Chooses the cluster layout for this process. Call it once at start, before any key is
/// built; afterwards (a key already named with the other root) it refuses.
pub fn use_cluster_layout() -> Result<(), &'static str> {
    match ROOT.get_or_init(|| CLUSTER_ROOT) {
        &CLUSTER_ROOT => Ok(()),
        _ => Err("the key layout was chosen before the Redis mode was known"),
    }
}

/// `sting` or `{sting}`; see [`use_cluster_layout`].
pub fn root() -> &'static str {
    ROOT.get_or_init(|| STANDALONE_ROOT)
}

/// A fixed key name under [`root`], built once.
macro_rules! owned_name {
    ($(#[$doc:meta])* $name:ident, $rest:literal) => {
        $(#[$doc])*
        pub fn $name() -> &'static str {
            static NAME: OnceLock<String> = OnceLock::new();
            NAME.get_or_init(|| format!("{}{}", root(), $rest))
        }
    };
}

owned_name! {
    /// Every analytics key (records, indexes, counters) starts so.
    analytics_prefix, ":analytics:"
}

/// The key families the proxy writes (and so may repair); other `sting:*` keys are not ours.
pub fn owned_prefixes() -> [String; 6] {
    let r = root();
    [
        analytics_prefix().to_owned(),
        format!("{r}:active:"),
        format!("{r}:metrics:"),
        KRATOS_CACHE_PREFIX.to_owned(),
        format!("{r}:aal2:"),
        format!("{r}:security:"),
    ]
}

/// The app's Flask-Session key for `sid` (read only for us).
pub fn flask_session(prefix: &str, sid: &str) -> String {
    let mut k = String::with_capacity(prefix.len() + sid.len());
    k.push_str(prefix);
    k.push_str(sid);
    k
}

/// Cached Kratos whoami answer, keyed by the SHA-256 of the credential (never the credential).
pub fn kratos_cache(credential_hash_hex: &str) -> String {
    format!("{KRATOS_CACHE_PREFIX}{credential_hash_hex}")
}

/// Per-session analytics record (hash).
pub fn analytics_session(sid: &str) -> String {
    format!("{}:analytics:session:{sid}", root())
}

/// A signed-in session's request timeline for replay (capped list, newest first): JSON
/// `{"timestamp", "method", "route", "status", "latency_ms", "address", "device"}`, never a
/// body, query string or cookie.
pub fn session_replay(sid: &str) -> String {
    format!("{}:analytics:session:{sid}:replay", root())
}

/// A session's recent actions (capped list, newest first).
pub fn session_actions(sid: &str) -> String {
    format!("{}:analytics:session:{sid}:actions", root())
}

/// The pages a session has viewed in one period (set of templates): how `page_sessions` counts
/// each session once per page. Short-lived; see [`session_pages_ttl_secs`].
pub fn session_pages(sid: &str, label: &str) -> String {
    format!("{}{label}", session_pages_prefix(sid))
}

/// [`session_pages`] without its period label: the `TOUCH` script appends the label of a
/// light session's first page when it promotes the session.
pub fn session_pages_prefix(sid: &str) -> String {
    format!("{}:analytics:session:{sid}:pages:", root())
}

/// Light session records of one day (hash: sid → JSON array): sessions without a user seen by
/// one request at most, which cost one hash field instead of four keys and an active-set entry
/// until a second request or a user promotes them to a [`analytics_session`] record. Filed
/// under the UTC day of their request; see [`light_buckets`]. Ended ones move to the bucket's
/// [`LIGHT_ENDED_SUFFIX`] twin, so the sweep reads only live ones.
pub fn light_sessions(day_label: &str) -> String {
    format!("{}:analytics:light:{day_label}", root())
}

/// Appended to a [`light_sessions`] bucket's name (by the `END` and `TOUCH` scripts too) for
/// the bucket of its ended records.
pub const LIGHT_ENDED_SUFFIX: &str = ":ended";

/// A light bucket and when it expires (Unix seconds): the end of its day plus the app's session
/// lifetime, when every record in it is past its own life.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LightBucket {
    pub key: String,
    pub expire_at: i64,
}

const DAY_MS: i64 = 86_400_000;

/// The bucket of the day of `ts_ms`.
pub fn light_bucket(ts_ms: i64, anonymous_ttl_secs: u64) -> LightBucket {
    let day = ts_ms.div_euclid(DAY_MS);
    LightBucket { key: light_sessions(&Period::Day.label(day * DAY_MS)), expire_at: (day + 1) * 86_400 + anonymous_ttl_secs as i64 }
}

/// The light-session buckets that may hold a session seen at `ts_ms`: a light record lives at
/// most `anonymous_ttl_secs` (the app's session lifetime) past its day, and batches may arrive
/// up to a day out of order across instances. Oldest first.
pub fn light_buckets(ts_ms: i64, anonymous_ttl_secs: u64) -> Vec<LightBucket> {
    let first = ts_ms.saturating_sub(anonymous_ttl_secs as i64 * 1000).saturating_sub(DAY_MS).div_euclid(DAY_MS);
    let last = ts_ms.saturating_add(DAY_MS).div_euclid(DAY_MS);
    (first..=last).map(|day| light_bucket(day * DAY_MS, anonymous_ttl_secs)).collect()
}

/// How long a [`session_pages`] set must live: its period and some slack for late batches.
pub fn session_pages_ttl_secs(period: Period) -> u64 {
    match period {
        Period::Hour => 2 * 3600,
        Period::Day => 26 * 3600,
    }
}

/// The breakdown dimension counting distinct sessions per page (see [`analytics_breakdown`]).
pub const PAGE_SESSIONS: &str = "page_sessions";

/// A user's sessions by start time (sorted set).
pub fn user_sessions(user_id: &str) -> String {
    format!("{}:analytics:user:{user_id}:sessions", root())
}

/// A user's signed-in requests by UTC weekday and hour (hash): field `{weekday}:{hour}`
/// (weekday 0 = Monday … 6, hour 0–23) → requests, at most 168 such fields, plus
/// `first_seen` and `last_seen` (unix ms of the user's first and latest request recorded).
pub fn user_activity(user_id: &str) -> String {
    format!("{}:analytics:user:{user_id}:activity", root())
}

/// A user's signed-in requests by route template (sorted set), capped at
/// [`USER_ROUTES_CAP`] members plus [`OTHER`] (templates of unrouted paths can be chosen
/// by the client).
pub fn user_routes(user_id: &str) -> String {
    format!("{}:analytics:user:{user_id}:routes", root())
}

/// A user's signed-in requests by device, `{browser}|{os}|{type}` (sorted set), capped at
/// [`USER_DEVICES_CAP`] members plus [`OTHER`] (bot names come from the client).
pub fn user_devices(user_id: &str) -> String {
    format!("{}:analytics:user:{user_id}:devices", root())
}

/// A user's signed-in requests by country, ISO code or `unknown` (sorted set), capped at
/// [`USER_COUNTRIES_CAP`] members plus [`OTHER`].
pub fn user_countries(user_id: &str) -> String {
    format!("{}:analytics:user:{user_id}:countries", root())
}

/// Most distinct route templates kept per user in [`user_routes`]; later ones count as
/// [`OTHER`].
pub const USER_ROUTES_CAP: usize = 100;

/// Most distinct devices kept per user in [`user_devices`].
pub const USER_DEVICES_CAP: usize = 20;

/// Most distinct countries kept per user in [`user_countries`].
pub const USER_COUNTRIES_CAP: usize = 50;

/// The member (or field) that counts what a capped structure no longer admits: the per-user
/// sorted sets, and the addresses of an [`auth_failures`] window.
pub const OTHER: &str = "other";

owned_name! {
    /// Signed-in sessions that are active, scored by their last activity (unix ms): who is online,
    /// newest first, without a scan. Added by the `TOUCH` script, removed by `END`, trimmed to the
    /// newest [`ONLINE_SESSIONS_CAP`] by each batch that touches a signed-in session.
    online_sessions, ":active:online"
}

/// How many sessions [`online_sessions()`] keeps.
pub const ONLINE_SESSIONS_CAP: usize = 10_000;

owned_name! {
    /// The most recently started sessions (sorted set, sid scored by start time in ms), capped at
    /// [`RECENT_SESSIONS_CAP`] once per batch after its `TOUCH` calls: the "recent sessions" list
    /// without a scan.
    recent_sessions, ":analytics:sessions:recent"
}

/// How many sessions [`recent_sessions()`] keeps.
pub const RECENT_SESSIONS_CAP: usize = 10_000;

owned_name! {
    /// All active sessions (set). `SCARD sting:active:sessions` is the seed's ops command.
    active_sessions, ":active:sessions"
}

owned_name! {
    /// Whose turn it is to sweep (string: an instance id, expiring after one sweep interval):
    /// taken with `SET NX`, so however many proxies share Redis, the active sessions are walked
    /// about once per interval, not once per instance.
    sweep_turn, ":active:sweep_turn"
}

owned_name! {
    /// Prefix of a user's active sessions set; see [`active_user`].
    active_user_prefix, ":active:users:"
}

/// A user's active sessions (set).
pub fn active_user(user_id: &str) -> String {
    format!("{}{user_id}", active_user_prefix())
}

owned_name! {
    /// Sessions that must authenticate again with a second factor before they are honoured (sorted
    /// set, sid scored by when the mark was made in ms; `security.actions` = `step_up`). Announced
    /// on [`revocations_channel()`] like revocations; an entry goes when its session steps up.
    step_up_sessions, ":security:step_up"
}

/// Invalid credentials per client address in one window of `security.auth_failure_window_seconds`
/// (hash, window start in unix seconds): `{address}` → distinct invalid credentials,
/// `{address}|{hash}` → 1 per credential seen, `!{address}` → the burst was reported; at most
/// [`AUTH_FAILURE_ADDRESS_CAP`] addresses, the rest counted under [`OTHER`]. Lives two windows.
pub fn auth_failures(window_start_secs: i64) -> String {
    format!("{}:security:auth_failures:{window_start_secs}", root())
}

/// Addresses one [`auth_failures`] window counts by name.
pub const AUTH_FAILURE_ADDRESS_CAP: usize = 5_000;

owned_name! {
    /// Revoked session ids (sorted set, scored by the time in ms until which the revocation is
    /// kept): every proxy instance loads it at start and whenever it resubscribes to
    /// [`revocations_channel()`], and refuses these sessions.
    revoked_sessions, ":security:revoked"
}

owned_name! {
    /// Pub/sub channel on which a revocation is announced (message: the session id), so every
    /// instance refuses the session at once. Under [`root`] like a key: a cluster routes `PUBLISH`
    /// by its channel, and it goes in one transaction with [`revoked_sessions()`]; a cluster
    /// delivers it to subscribers on every node.
    revocations_channel, ":security:revocations"
}

owned_name! {
    /// The audit log of state-changing API calls (list, newest first, capped at [`AUDIT_LOG_CAP`]):
    /// JSON `{"timestamp", "actor", "action", "target", "result"}`.
    audit_log, ":security:audit"
}

/// How many entries [`audit_log()`] keeps.
pub const AUDIT_LOG_CAP: usize = 10_000;

/// The anomalies detected on one UTC day (list, newest first, capped at
/// `security.max_anomalies_per_day`): JSON `{"timestamp", "session_id", "user_id", "detector",
/// "severity", "evidence"}`.
pub fn anomalies(day_label: &str) -> String {
    format!("{}:security:anomalies:{day_label}", root())
}

/// The devices (`ua:{browser|os|class}`) and countries (`country:{CC}`) a user has been seen
/// with (set, capped), for `new_device` / `new_country`.
pub fn user_known(user_id: &str) -> String {
    format!("{}:security:user:{user_id}:known", root())
}

owned_name! {
    /// The security alert stream (Redis stream, `MAXLEN ~ 10000`): one entry `anomaly` = the
    /// anomaly JSON per anomaly recorded; read by every instance in one consumer group.
    alert_stream, ":security:alerts"
}

owned_name! {
    /// The alert rules set through the API (string, JSON array).
    alert_rules, ":security:alert_rules"
}

/// Marks that a webhook (by the first 8 bytes of its URL's SHA-256, hex) got a session's alert of
/// one detector (string, 1 day): an alert taken over from a dead instance is not sent twice.
pub fn alert_sent(sid: &str, detector: &str, url_hash_hex: &str) -> String {
    format!("{}{sid}:{detector}:{url_hash_hex}", alert_sent_prefix())
}

owned_name! {
    /// Prefix of [`alert_sent`] keys.
    alert_sent_prefix, ":security:alert_sent:"
}

/// Which analytics period a key covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Period {
    /// `YYYY-MM-DD` (UTC).
    Day,
    /// `YYYY-MM-DDTHH` (UTC).
    Hour,
}

impl Period {
    pub fn as_str(self) -> &'static str {
        match self {
            Period::Day => "daily",
            Period::Hour => "hourly",
        }
    }

    /// The period label for a unix time in milliseconds.
    pub fn label(self, ts_ms: i64) -> String {
        let t = chrono::DateTime::from_timestamp_millis(ts_ms).unwrap_or_default();
        match self {
            Period::Day => t.format("%Y-%m-%d").to_string(),
            Period::Hour => t.format("%Y-%m-%dT%H").to_string(),
        }
    }

    fn length_ms(self) -> i64 {
        match self {
            Period::Day => 86_400_000,
            Period::Hour => 3_600_000,
        }
    }

    /// The period holding a unix time in milliseconds, as a number: the analytics writer sums
    /// by it and makes the label text once per key, not once per event.
    pub fn slot(self, ts_ms: i64) -> PeriodSlot {
        PeriodSlot { period: self, index: ts_ms.div_euclid(self.length_ms()) }
    }
}

/// One day or one hour, numbered from the Unix epoch (UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PeriodSlot {
    pub period: Period,
    pub index: i64,
}

impl PeriodSlot {
    /// `YYYY-MM-DD` or `YYYY-MM-DDTHH`, as in the keys.
    pub fn label(self) -> String {
        self.period.label(self.index.saturating_mul(self.period.length_ms()))
    }
}

/// Analytics counters for one period (hash): page_views, hits, sessions_started, ...
pub fn analytics_period(period: Period, label: &str) -> String {
    format!("{}:analytics:{}:{label}", root(), period.as_str())
}

/// A breakdown of one period (sorted set): `pages`, `browsers`, `os`, `devices`, `countries`,
/// `cities`, and [`PAGE_SESSIONS`].
pub fn analytics_breakdown(period: Period, label: &str, dimension: &str) -> String {
    format!("{}:analytics:{}:{label}:{dimension}", root(), period.as_str())
}

/// Distinct users of one period (HyperLogLog).
pub fn analytics_unique_users(period: Period, label: &str) -> String {
    format!("{}:analytics:{}:{label}:users", root(), period.as_str())
}

/// Request metrics for one period (hash): requests, status classes, bytes, latency buckets.
pub fn metrics_period(period: Period, label: &str) -> String {
    format!("{}:metrics:{}:{label}", root(), period.as_str())
}

/// Acquisition of one period (sorted set): sessions by the first page view's source, one set
/// per dimension of [`ACQUISITION_DIMENSIONS`] (`referrers`: referrer domain or
/// [`DIRECT`]; `utm_source`, `utm_medium`, `utm_campaign`: as tagged). At most
/// `analytics.max_acquisition_values_per_day` members per day per process, the rest as
/// [`OTHER`].
pub fn acquisition(period: Period, label: &str, dimension: &str) -> String {
    format!("{}:analytics:{}:{label}:acq:{dimension}", root(), period.as_str())
}

/// The acquisition dimensions, in the order the writer passes them to the journey script.
pub const ACQUISITION_DIMENSIONS: [&str; 4] = ["referrers", "utm_source", "utm_medium", "utm_campaign"];

/// The referrer member of a session that arrived without one (or from the same site).
pub const DIRECT: &str = "(direct)";

/// The users acquired in one period (set of `{dimension}\n{value}\n{user id}`): how the
/// acquisition answer counts distinct users per value over a range exactly.
pub fn acquisition_users(period: Period, label: &str) -> String {
    format!("{}:analytics:{}:{label}:acq:users", root(), period.as_str())
}

/// A session's journey (hash): `l` the day of its first page view (the one acquisition
/// counts), `a` that page view's source (`{day}\t{hour}\t{referrer}\t{source}\t{medium}\t
/// {campaign}`), `u` the first user seen, `f:{funnel}:{version}` the funnel steps reached in
/// order. Written by the journey script; lives as long as the session record.
pub fn session_journey(sid: &str) -> String {
    format!("{}:analytics:session:{sid}:journey", root())
}

/// Keys that hold configuration set through the API or at start (alert rules, funnels): kept
/// without a TTL on purpose; `validate` does not count them as missing one.
pub fn configuration_keys() -> [&'static str; 2] {
    [alert_rules(), funnels()]
}

owned_name! {
    /// The funnels (hash): name → JSON array of steps (route templates or action names), from
    /// `[[analytics.funnels]]` (written at start) and `POST /api/analytics/funnels`.
    funnels, ":analytics:funnels"
}

/// Sessions that reached each step of one funnel version on one day (hash): field `{step}`
/// (1-based) → sessions. `version` is the first 8 hex digits of the SHA-1 of the funnel's
/// definition JSON, so redefining a funnel starts its counts afresh.
pub fn funnel_day(label: &str, name: &str, version: &str) -> String {
    format!("{}{name}:{version}", funnel_day_prefix(label))
}

/// [`funnel_day`] without name and version: the journey script appends `{name}:{version}`
/// (and `:users` for [`funnel_day_users`]) for the funnels it reads.
pub fn funnel_day_prefix(label: &str) -> String {
    format!("{}:analytics:daily:{label}:funnel:", root())
}

/// The users that reached each step of one funnel version on one day (set of
/// `{step}\n{user id}`).
pub fn funnel_day_users(label: &str, name: &str, version: &str) -> String {
    format!("{}:users", funnel_day(label, name, version))
}

owned_name! {
    /// Every user ever recorded → a dense index (hash), the bit position in the retention bitmaps.
    /// No TTL (first-seen must outlive the retention); one field per user, erased with the user.
    user_index, ":analytics:users:index"
}

owned_name! {
    /// The next dense user index (string counter) for [`user_index()`].
    user_index_next, ":analytics:users:next"
}

/// Users first seen on a UTC day (bitmap by [`user_index()`] position): retention cohorts.
pub fn new_users_bitmap(day_label: &str) -> String {
    format!("{}:analytics:daily:{day_label}:new_users", root())
}

/// Users active (one signed-in request or more) on a UTC day (bitmap by [`user_index()`] position).
pub fn active_users_bitmap(day_label: &str) -> String {
    format!("{}:analytics:daily:{day_label}:active_users", root())
}

owned_name! {
    /// Prefix of the writers' batch sequences; see [`analytics_writer`].
    analytics_writer_prefix, ":analytics:writer:"
}

/// How long a writer's sequence outlives its last batch: far longer than any retry.
pub const ANALYTICS_WRITER_TTL_SECS: u64 = 86_400;

owned_name! {
    /// Prefix of the per-batch markers of earlier versions (one key per batch); they expire on
    /// their own within a day of an upgrade, and `validate` still knows their TTL.
    legacy_analytics_batch_prefix, ":analytics:batch:"
}

/// The number of the last batch one writer (one process) committed: set inside each batch's
/// transaction, so a retry after a lost reply can tell the batch already landed instead of
/// counting it twice. One key per writer process, not per batch.
pub fn analytics_writer(writer_id: &str) -> String {
    format!("{}{writer_id}", analytics_writer_prefix())
}

owned_name! {
    /// Prefix of the AAL2 step-up events; see [`aal2_event`].
    aal2_prefix, ":aal2:"
}

/// How long an AAL2 step-up event is kept (7 days, as in the seed).
pub const AAL2_EVENT_TTL_SECS: u64 = 7 * 86_400;

/// One AAL2 step-up event (JSON string).
pub fn aal2_event(sid: &str, ts_secs: i64) -> String {
    format!("{}{sid}:{ts_secs}", aal2_prefix())
}

/// Prefix of the cached Kratos answers; see [`kratos_cache`].
pub const KRATOS_CACHE_PREFIX: &str = "sting:kratos:";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn period_slots_label_like_the_period() {
        for ts in [0_i64, 1_796_043_900_000, 1_796_083_199_999, 1_796_083_200_000, -1] {
            for p in [Period::Day, Period::Hour] {
                assert_eq!(p.slot(ts).label(), p.label(ts), "{p:?} {ts}");
            }
        }
        assert_eq!(Period::Hour.slot(1_796_043_900_000), Period::Hour.slot(1_796_043_600_000), "same hour");
        assert_ne!(Period::Hour.slot(1_796_043_599_999), Period::Hour.slot(1_796_043_600_000));
    }

    #[test]
    fn key_shapes() {
        assert_eq!(flask_session("sting:session:", "abc"), "sting:session:abc");
        assert_eq!(kratos_cache("00ff"), "sting:kratos:00ff");
        assert_eq!(analytics_session("s1"), "sting:analytics:session:s1");
        assert_eq!(session_pages("s1", "2026-12-04"), "sting:analytics:session:s1:pages:2026-12-04");
        assert_eq!(session_actions("s1"), "sting:analytics:session:s1:actions");
        assert_eq!(session_replay("s1"), "sting:analytics:session:s1:replay");
        assert_eq!(user_sessions("u1"), "sting:analytics:user:u1:sessions");
        assert_eq!(user_activity("u1"), "sting:analytics:user:u1:activity");
        assert_eq!(user_routes("u1"), "sting:analytics:user:u1:routes");
        assert_eq!(user_devices("u1"), "sting:analytics:user:u1:devices");
        assert_eq!(user_countries("u1"), "sting:analytics:user:u1:countries");
        assert_eq!(active_user("u1"), "sting:active:users:u1");
        // 2026-11-30T13:05:00Z
        let ts = 1_796_043_900_000;
        assert_eq!(Period::Day.label(ts), "2026-11-30");
        assert_eq!(Period::Hour.label(ts), "2026-11-30T13");
        assert_eq!(analytics_period(Period::Day, "2026-11-30"), "sting:analytics:daily:2026-11-30");
        assert_eq!(analytics_breakdown(Period::Hour, "2026-11-30T13", "pages"), "sting:analytics:hourly:2026-11-30T13:pages");
        assert_eq!(analytics_unique_users(Period::Day, "2026-11-30"), "sting:analytics:daily:2026-11-30:users");
        assert_eq!(metrics_period(Period::Day, "2026-11-30"), "sting:metrics:daily:2026-11-30");
        assert_eq!(aal2_event("s1", 5), "sting:aal2:s1:5");
        assert_eq!(acquisition(Period::Day, "2026-11-30", "referrers"), "sting:analytics:daily:2026-11-30:acq:referrers");
        assert_eq!(acquisition_users(Period::Hour, "2026-11-30T13"), "sting:analytics:hourly:2026-11-30T13:acq:users");
        assert_eq!(session_journey("s1"), "sting:analytics:session:s1:journey");
        assert_eq!(funnel_day("2026-11-30", "signup", "0a1b2c3d"), "sting:analytics:daily:2026-11-30:funnel:signup:0a1b2c3d");
        assert_eq!(new_users_bitmap("2026-11-30"), "sting:analytics:daily:2026-11-30:new_users");
    }

    /// A light record made at `ts` by a batch up to a day late or early is found by any script
    /// run while it can still live: the buckets searched cover its day. A bucket expires a
    /// session lifetime after its day ends.
    #[test]
    fn light_buckets_cover_a_records_life() {
        let ts = 1_796_043_900_000; // 2026-11-30T13:05:00Z
        let ttl = 86_400;
        let names: Vec<String> = light_buckets(ts, ttl).into_iter().map(|b| b.key).collect();
        assert_eq!(names, ["2026-11-28", "2026-11-29", "2026-11-30", "2026-12-01"].map(|d| format!("{}:analytics:light:{d}", root())));
        let home = light_bucket(ts, ttl);
        assert_eq!(home.expire_at, 1_796_083_200 + 86_400, "2026-12-01T00:00Z plus a day");
        for later in [ts - 86_400_000, ts, ts + ttl as i64 * 1000, ts + ttl as i64 * 1000 + 86_399_000] {
            assert!(light_buckets(later, ttl).contains(&home), "{later}");
        }
        // A 31-day session lifetime: 34 buckets, each a single HGET in the script.
        assert_eq!(light_buckets(ts, 31 * 86_400).len(), 34);
    }
}
