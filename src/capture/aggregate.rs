//! Pre-aggregation of one batch of enriched events into the Redis writes that record it: one
//! pipeline per batch. Pure (builds commands); no I/O.
//!
//! A batch of N requests on a few sessions becomes a few dozen commands: counters are summed in
//! memory first and sent as one `HINCRBY`/`ZINCRBY` per distinct field, and each session is
//! touched once per batch by the `TOUCH` script. Every key written gets its retention TTL in the
//! same pipeline.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::{Arc, OnceLock};

use crate::capture::acquisition::Source;
use crate::capture::detect::{self, Observation};
use crate::capture::device::Device;
use crate::capture::geo::Location;
use crate::capture::journey::{self, SessionJourney};
use crate::capture::privacy::Privacy;
use crate::capture::request_event::{EndReason, RequestEvent, SessionSignal};
use crate::capture::retention;
use crate::capture::session_scripts::{self, LightStart, Touch};
use crate::capture::user_behavior::{self, UserSums};
use crate::observe::printable::push_json_string;
use crate::store::keys::{self, Period, PeriodSlot};

/// Upper bounds (ms) of the request-latency histogram buckets.
pub const LATENCY_BUCKETS_MS: &[u64] = &[1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000];

/// One request with everything the writer worked out about it.
pub struct Enriched<'a> {
    pub event: &'a RequestEvent,
    pub template: &'a str,
    pub page_view: bool,
    /// A named action from the configured rules (`login`, `upload_document`, ...).
    pub action: Option<&'a str>,
    /// The request asked not to be tracked (`Sec-GPC: 1`, `DNT: 1`, as configured): it counts
    /// in aggregates, but leaves its session no address, device, timeline or detector state.
    pub private: bool,
    pub device: &'a Device,
    pub location: &'a Location,
}

/// Settings the writes depend on.
#[derive(Debug, Clone)]
pub struct WriteSettings {
    pub ttl_secs: u64,
    /// The life of a session record (and its actions) without a user: the app's session
    /// lifetime, at most `ttl_secs`.
    pub anonymous_ttl_secs: u64,
    pub actions_cap: usize,
    /// Idle ends are re-checked against this when written.
    pub idle_timeout_ms: u64,
    /// The anomaly detectors' settings JSON; `None` when none is on.
    pub detect: Option<String>,
    /// Requests kept per signed-in session for replay; 0 = none.
    pub replay_cap: usize,
    /// `auth_failure_burst`'s window in seconds; 0 when the detector is off.
    pub auth_burst_window_secs: u32,
    /// How addresses and personal fields are stored.
    pub privacy: Arc<Privacy>,
    /// `analytics.acquisition_all_navigations`: count the source of every page view of a
    /// session, not only of its first.
    pub acquisition_all_navigations: bool,
}

/// The batch sums by period number; label text is made once per key when the batch is written.
type PeriodKey = PeriodSlot;

/// An action of a session, formatted as JSON only if it is among the newest kept.
#[derive(Debug, Clone, PartialEq)]
struct PendingAction {
    ts_ms: i64,
    name: Cow<'static, str>,
    page: Option<String>,
}

/// One request of a signed-in session, for its replay timeline: no body, query or cookie.
#[derive(Debug, Clone, PartialEq)]
struct ReplayEntry {
    ts_ms: i64,
    method: http::Method,
    route: String,
    status: u16,
    latency_us: u64,
    address: Option<std::net::IpAddr>,
    /// Index into the batch's `replay_devices` (one string per distinct device, not per request).
    device: usize,
}

impl ReplayEntry {
    /// The stored form, a compact JSON array (see [`replay_entry_json`]), written without
    /// building a JSON value: this runs once per signed-in request.
    fn stored(&self, devices: &[String], prefixes: &mut BTreeMap<std::net::IpAddr, String>, privacy: &Privacy) -> String {
        use std::fmt::Write;
        let mut out = String::with_capacity(96 + self.route.len());
        let _ = write!(out, "[{},", self.ts_ms);
        push_json_string(&mut out, self.method.as_str());
        out.push(',');
        push_json_string(&mut out, &self.route);
        let _ = write!(out, ",{},{},", self.status, self.latency_us);
        match self.address {
            Some(ip) => out.push_str(prefixes.entry(ip).or_insert_with(|| {
                let mut text = String::new();
                push_json_string(&mut text, &privacy.stored_prefix(crate::capture::privacy::address_prefix(ip)));
                text
            })),
            None => out.push_str("null"),
        }
        out.push(',');
        push_json_string(&mut out, devices.get(self.device).map(String::as_str).unwrap_or_default());
        out.push(']');
        out
    }
}

/// A stored replay entry as the API shows it: `[ms, method, route, status, latency µs, address
/// prefix, device]` becomes `{"timestamp", "method", "route", "status", "latency_ms",
/// "address", "device"}`; an entry already in that shape (written by an older version) passes.
pub fn replay_entry_json(stored: &str) -> Option<serde_json::Value> {
    let v: serde_json::Value = serde_json::from_str(stored).ok()?;
    let Some(a) = v.as_array() else { return v.is_object().then_some(v) };
    let ts = a.first()?.as_i64()?;
    Some(serde_json::json!({
        "timestamp": chrono::DateTime::from_timestamp_millis(ts)?.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "method": a.get(1)?,
        "route": a.get(2)?,
        "status": a.get(3)?,
        "latency_ms": a.get(4)?.as_u64()? as f64 / 1000.0,
        "address": a.get(5)?,
        "device": a.get(6)?,
    }))
}

/// The writes for one batch, summed.
///
/// Adding an event is the writer's per-request cost, paid on the proxy's cores: it allocates
/// only for what the batch has not seen yet (a new session, member or field), never formats
/// dates, and defers the action JSON to [`Batch::to_pipeline`].
#[derive(Default, Debug)]
pub struct Batch {
    /// analytics hash per period → field → increment
    analytics: BTreeMap<PeriodKey, BTreeMap<&'static str, i64>>,
    /// metrics hash per period → field → increment
    metrics: BTreeMap<PeriodKey, BTreeMap<&'static str, i64>>,
    /// breakdown zset per (period, dimension) → member → increment
    breakdowns: BTreeMap<(PeriodKey, &'static str), BTreeMap<String, i64>>,
    users: BTreeMap<PeriodKey, BTreeSet<String>>,
    touches: BTreeMap<String, Touch>,
    /// sid → actions in time order
    actions: BTreeMap<String, Vec<PendingAction>>,
    /// signed-in sid → what its requests showed (address, place, browser), changes only
    observations: BTreeMap<String, Vec<Observation>>,
    /// signed-in sid → its requests, for the replay timeline (formatted when written)
    replay: BTreeMap<String, Vec<ReplayEntry>>,
    /// The replay entries' devices (`browser / os / class`, or empty), each once.
    replay_devices: Vec<String>,
    /// Invalid credentials seen: (time, client address, fingerprint, outcome); at most one per
    /// event, so bounded by the batch.
    failures: Vec<(i64, IpAddr, [u8; 8], &'static str)>,
    ends: Vec<(String, i64, EndReason)>,
    /// user id → what their signed-in requests add to their behaviour aggregates
    behavior: BTreeMap<String, UserSums>,
    /// sid → the sources of its landing candidates (see [`Batch::add_landing`])
    journeys: BTreeMap<String, SessionJourney>,
    /// The daily users the retention script must record (see [`Batch::keep_new_retention`]);
    /// `None`: every user of the batch.
    retention_users: Option<BTreeMap<PeriodKey, BTreeSet<String>>>,
    pub events: usize,
}

fn periods(ts_ms: i64) -> [PeriodKey; 2] {
    [Period::Day.slot(ts_ms), Period::Hour.slot(ts_ms)]
}

/// The metrics-hash field counting a status class.
fn status_field(status: u16) -> &'static str {
    match crate::observe::metrics::status_class(status) {
        Some("1xx") => "status_1xx",
        Some("2xx") => "status_2xx",
        Some("3xx") => "status_3xx",
        Some("4xx") => "status_4xx",
        Some("5xx") => "status_5xx",
        _ => "status_other",
    }
}

/// The metrics-hash field of the latency bucket holding `latency_ms`: `latency_le_{b}ms` for
/// the first bound `b` of [`LATENCY_BUCKETS_MS`] it does not exceed, else `latency_gt_max`.
fn latency_field(latency_ms: u64) -> &'static str {
    static NAMES: OnceLock<Vec<String>> = OnceLock::new();
    let names = NAMES.get_or_init(|| LATENCY_BUCKETS_MS.iter().map(|b| format!("latency_le_{b}ms")).collect());
    match LATENCY_BUCKETS_MS.iter().position(|b| latency_ms <= *b) {
        Some(i) => names[i].as_str(),
        None => "latency_gt_max",
    }
}

/// `map[key]`, inserted as `V::default()` when missing; the owned key is made only then.
fn slot<'m, Q, K, V>(map: &'m mut BTreeMap<K, V>, key: &Q) -> &'m mut V
where
    K: Ord + std::borrow::Borrow<Q>,
    Q: Ord + ToOwned<Owned = K> + ?Sized,
    V: Default,
{
    if !map.contains_key(key) {
        map.insert(key.to_owned(), V::default());
    }
    map.get_mut(key).expect("inserted above")
}

/// Replaces `field` with `value` only when they differ (no allocation for the usual repeat).
fn keep_latest(field: &mut String, value: &str) {
    if field != value {
        value.clone_into(field);
    }
}

impl Batch {
    pub fn add_request(&mut self, e: &Enriched<'_>) {
        let ev = e.event;
        self.events += 1;
        if let (Some(fp), Some(ip)) = (ev.failed_credential, ev.ip) {
            self.failures.push((ev.ts_ms, ip, fp, ev.auth_outcome));
        }
        let status_field = status_field(ev.status);
        let latency_field = latency_field(ev.latency_us / 1000);
        let bot = e.device.kind == crate::capture::device::DeviceKind::Bot;
        let periods = periods(ev.ts_ms);
        for pk in periods {
            let m = self.metrics.entry(pk).or_default();
            for (field, n) in [
                ("requests", 1),
                (status_field, 1),
                (latency_field, 1),
                ("latency_total_us", ev.latency_us as i64),
                ("bytes_in", ev.bytes_in as i64),
                ("bytes_out", ev.bytes_out as i64),
            ] {
                *m.entry(field).or_default() += n;
            }
            if let Some(u) = ev.upstream_latency_us {
                *m.entry("upstream_latency_total_us").or_default() += u as i64;
                *m.entry("upstream_requests").or_default() += 1;
            }

            let a = self.analytics.entry(pk).or_default();
            *a.entry("hits").or_default() += 1;
            if ev.status >= 500 {
                *a.entry("errors").or_default() += 1;
            }
            if e.page_view {
                *a.entry("page_views").or_default() += 1;
                if bot {
                    *a.entry("bot_page_views").or_default() += 1;
                }
                let mut bump = |dim: &'static str, member: &str| {
                    if !member.is_empty() {
                        *slot(self.breakdowns.entry((pk, dim)).or_default(), member) += 1;
                    }
                };
                bump("pages", e.template);
                bump("browsers", &e.device.browser);
                bump("os", &e.device.os);
                bump("devices", e.device.kind.as_str());
                bump("countries", e.location.country.as_deref().unwrap_or("unknown"));
                if let Some(city) = &e.location.city {
                    bump("cities", city);
                }
            }
            if let Some(id) = &ev.identity {
                let users = self.users.entry(pk).or_default();
                if !users.contains(&id.user_id) {
                    users.insert(id.user_id.clone());
                }
            }
        }
        // A request that asked not to be tracked adds nothing to its user's behaviour profile.
        if let (Some(id), false) = (&ev.identity, e.private) {
            let device = [e.device.browser.as_str(), e.device.os.as_str(), e.device.kind.as_str()];
            let country = e.location.country.as_deref().unwrap_or(crate::capture::device::UNKNOWN);
            slot(&mut self.behavior, id.user_id.as_str()).add(ev.ts_ms, e.template, device, country);
        }

        if let Some(sid) = &ev.sid {
            let t = self.touch(sid, e);
            t.hits += 1;
            t.page_views += i64::from(e.page_view);
            if ev.identity.is_some() && !e.private {
                self.observe(sid, e);
                let device = self.replay_device(e.device);
                slot(&mut self.replay, sid.as_str()).push(ReplayEntry {
                    ts_ms: ev.ts_ms,
                    method: ev.method.clone(),
                    route: e.template.to_owned(),
                    status: ev.status,
                    latency_us: ev.latency_us,
                    address: ev.ip,
                    device,
                });
            }
            let t = self.touches.get_mut(sid.as_str()).expect("touched above");
            if let Some(id) = &ev.identity {
                if t.user_id.as_deref() != Some(id.user_id.as_str()) {
                    t.user_id = Some(id.user_id.clone());
                }
                if t.email != id.email {
                    t.email = id.email.clone();
                }
                t.auth_source = id.source.as_str();
                if id.aal.is_some() && t.aal != id.aal {
                    t.aal = id.aal.clone();
                }
            } else if t.auth_source.is_empty() {
                t.auth_source = "anonymous";
            }
            if e.page_view {
                for pk in periods {
                    let seen = t.pages.entry(pk).or_default();
                    if !seen.contains(e.template) {
                        seen.insert(e.template.to_owned());
                    }
                }
            }
            // No timeline for a request that asked not to be tracked.
            if !e.private {
                let acts = slot(&mut self.actions, sid.as_str());
                if e.page_view {
                    acts.push(PendingAction { ts_ms: ev.ts_ms, name: Cow::Borrowed("page_view"), page: Some(e.template.to_owned()) });
                }
                if let Some(name) = e.action {
                    acts.push(PendingAction { ts_ms: ev.ts_ms, name: Cow::Owned(name.to_owned()), page: Some(e.template.to_owned()) });
                }
            }
        }

        match &ev.signal {
            SessionSignal::None => {}
            // A new session cookie: the session starts now, even before its first use.
            SessionSignal::Issued { sid } => {
                let t = self.touch(sid, e);
                if t.auth_source.is_empty() {
                    t.auth_source = "anonymous";
                }
            }
            SessionSignal::Cleared { sid } => {
                slot(&mut self.actions, sid.as_str()).push(PendingAction { ts_ms: ev.ts_ms, name: Cow::Borrowed("logout"), page: Some(e.template.to_owned()) });
                self.ends.push((sid.clone(), ev.ts_ms, EndReason::Logout));
            }
        }
    }

    /// The index of `d` among the batch's replay devices (a batch sees few).
    fn replay_device(&mut self, d: &Device) -> usize {
        let text = |d: &Device| {
            if d.browser == crate::capture::device::UNKNOWN {
                String::new()
            } else {
                format!("{} / {} / {}", d.browser, d.os, d.kind.as_str())
            }
        };
        let same = |s: &str| {
            if d.browser == crate::capture::device::UNKNOWN {
                return s.is_empty();
            }
            crate::capture::device::is_joined(s, " / ", [&d.browser, &d.os, d.kind.as_str()])
        };
        if let Some(i) = self.replay_devices.iter().position(|s| same(s)) {
            return i;
        }
        self.replay_devices.push(text(d));
        self.replay_devices.len() - 1
    }

    /// The batch's touch for `sid`, widened to this request's time and carrying its latest
    /// address and latest known location. The device is the first known one: a session's device is recorded
    /// once, at its start, and an asset fetch without a User-Agent must not stand for it.
    fn touch(&mut self, sid: &str, e: &Enriched<'_>) -> &mut Touch {
        let ev = e.event;
        if !self.touches.contains_key(sid) {
            self.touches.insert(sid.to_owned(), Touch { sid: sid.to_owned(), first_ts_ms: ev.ts_ms, last_ts_ms: ev.ts_ms, ..Touch::default() });
        }
        let t = self.touches.get_mut(sid).expect("inserted above");
        t.first_ts_ms = t.first_ts_ms.min(ev.ts_ms);
        t.last_ts_ms = t.last_ts_ms.max(ev.ts_ms);
        if e.private {
            return t;
        }
        if let Some(ip) = ev.ip {
            t.ip = Some(ip);
            t.first_ip.get_or_insert(ip);
        }
        // The latest known place: a request from an address the database does not know (a
        // private one, say) must not erase it.
        if let Some(country) = &e.location.country {
            keep_latest(&mut t.country, country);
            keep_latest(&mut t.city, e.location.city.as_deref().unwrap_or_default());
        }
        if t.browser.is_empty() || (t.browser == crate::capture::device::UNKNOWN && e.device.browser != crate::capture::device::UNKNOWN) {
            t.browser = e.device.browser.clone();
            t.os = e.device.os.clone();
            t.device = e.device.kind.as_str().to_owned();
        }
        t
    }

    /// Notes what a signed-in session's request showed, if it differs from the last one.
    fn observe(&mut self, sid: &str, e: &Enriched<'_>) {
        let ev = e.event;
        if let Some(last) = self.observations.get(sid).and_then(|seen| seen.last()) {
            if last.repeats(ev.ip, e.location, [&e.device.browser, &e.device.os, e.device.kind.as_str()]) {
                return;
            }
        }
        let ua = if e.device.browser == crate::capture::device::UNKNOWN {
            String::new()
        } else {
            format!("{}|{}|{}", e.device.browser, e.device.os, e.device.kind.as_str())
        };
        let o = Observation::new(ev.ts_ms, ev.ip, e.location, ua);
        let seen = slot(&mut self.observations, sid);
        if seen.last().is_some_and(|last| last.same_as(&o)) || seen.len() >= detect::MAX_OBSERVATIONS {
            return;
        }
        seen.push(o);
    }

    /// Whether `t` may start its session as a light record: no user or AAL, one request at
    /// most, and no action but that request's page view (a logout is an action).
    fn light_start<'s>(&'s self, t: &Touch) -> Option<LightStart<'s>> {
        if t.user_id.is_some() || t.aal.is_some() || t.hits > 1 {
            return None;
        }
        match self.actions.get(t.sid.as_str()).map(Vec::as_slice).unwrap_or_default() {
            [] => Some(LightStart { page_view: None }),
            [a] if a.name == "page_view" => Some(LightStart { page_view: Some((a.ts_ms, a.page.as_deref().unwrap_or_default())) }),
            _ => None,
        }
    }

    /// Whether the batch already holds a landing candidate of `sid` (only a session's first page
    /// view of the batch can be its landing, unless every navigation counts).
    pub fn has_landing(&self, sid: &str) -> bool {
        self.journeys.get(sid).is_some_and(|j| !j.landings.is_empty())
    }

    /// A page view of `sid` whose source acquisition may count: the journey script counts it
    /// if it is the session's first page view (or every one, with
    /// `acquisition_all_navigations`). `private`: the request asked not to be tracked, so the
    /// source is counted but not kept with the session.
    pub fn add_landing(&mut self, sid: &str, ts_ms: i64, source: Source, private: bool) {
        let j = slot(&mut self.journeys, sid);
        if j.landings.is_empty() {
            j.keep_source = !private;
        }
        j.landings.push((ts_ms, source));
    }

    /// Leaves to the retention script only the users `known` has not recorded today.
    pub fn keep_new_retention(&mut self, known: &mut retention::KnownUsers) {
        self.retention_users = Some(known.unrecorded(&self.users));
    }

    pub fn add_end(&mut self, sid: String, ts_ms: i64, reason: EndReason) {
        self.events += 1;
        self.ends.push((sid, ts_ms, reason));
    }

    /// One pipeline recording the whole batch. Touches run before ends, so a session that starts
    /// and logs out within one batch is recorded whole.
    pub fn to_pipeline(&self, s: &WriteSettings) -> redis::Pipeline {
        let mut p = redis::pipe();
        if !self.touches.is_empty() || !self.ends.is_empty() {
            session_scripts::load_scripts(&mut p);
        }
        let ttl = s.ttl_secs as i64;
        // Keys this pipeline gives their expiry before the scripts run (the scripts leave it to
        // the batch: see `session_scripts::batch_expiries`).
        let mut expired = std::collections::BTreeSet::new();
        for (pk, fields) in &self.analytics {
            let key = keys::analytics_period(pk.period, &pk.label());
            for (f, n) in fields {
                p.hincr(&key, *f, *n).ignore();
            }
            p.expire(&key, ttl).ignore();
            expired.insert(key);
        }
        for (pk, fields) in &self.metrics {
            let key = keys::metrics_period(pk.period, &pk.label());
            for (f, n) in fields {
                p.hincr(&key, *f, *n).ignore();
            }
            p.expire(&key, ttl).ignore();
        }
        for ((pk, dim), members) in &self.breakdowns {
            let key = keys::analytics_breakdown(pk.period, &pk.label(), dim);
            for (m, n) in members {
                p.zincr(&key, m, *n).ignore();
            }
            p.expire(&key, ttl).ignore();
        }
        for (pk, users) in &self.users {
            let key = keys::analytics_unique_users(pk.period, &pk.label());
            p.pfadd(&key, users.iter().collect::<Vec<_>>()).ignore();
            p.expire(&key, ttl).ignore();
        }
        if let Some(retain) = retention::retain_cmd(self.retention_users.as_ref().unwrap_or(&self.users), s.ttl_secs) {
            p.cmd("SCRIPT").arg("LOAD").arg(retention::RETAIN).ignore();
            p.add_command(retain).ignore();
        }
        let mut detect_loaded = false;
        for t in self.touches.values() {
            let light = self.light_start(t);
            p.add_command(session_scripts::touch_cmd(t, s.ttl_secs, s.anonymous_ttl_secs, s.actions_cap, light.as_ref(), &s.privacy)).ignore();
            // The detectors, atomically after the touch that updated the session.
            if let (Some(settings), Some(user), Some(obs)) = (&s.detect, &t.user_id, self.observations.get(t.sid.as_str())) {
                if !detect_loaded {
                    p.cmd("SCRIPT").arg("LOAD").arg(detect::detect_script()).ignore();
                    detect_loaded = true;
                }
                let mut obs = obs.clone();
                obs.sort_by_key(|o| o.ts_ms);
                for o in &mut obs {
                    o.prefix = s.privacy.stored_prefix(std::mem::take(&mut o.prefix));
                }
                p.add_command(detect::detect_cmd(&t.sid, user, t.aal.as_deref(), &obs, settings)).ignore();
            }
        }
        session_scripts::batch_expiries(&mut p, self.touches.values(), s.ttl_secs, &expired);
        self.journey_commands(&mut p, s);
        for (sid, acts) in &self.actions {
            // A light start's page view is pushed by its TOUCH, unless the record stays light.
            if acts.is_empty() || self.touches.get(sid.as_str()).is_some_and(|t| self.light_start(t).is_some()) {
                continue;
            }
            let key = keys::session_actions(sid);
            let newest: Vec<String> =
                acts.iter().skip(acts.len().saturating_sub(s.actions_cap)).map(|a| session_scripts::action_json(a.ts_ms, &a.name, a.page.as_deref())).collect();
            p.lpush(&key, newest).ignore();
            p.ltrim(&key, 0, s.actions_cap as isize - 1).ignore();
            let anonymous = self.touches.get(sid.as_str()).is_some_and(|t| t.user_id.is_none());
            p.expire(&key, if anonymous { s.anonymous_ttl_secs.min(s.ttl_secs) as i64 } else { ttl }).ignore();
        }
        if s.replay_cap > 0 {
            let mut prefixes = BTreeMap::new();
            for (sid, entries) in &self.replay {
                let key = keys::session_replay(sid);
                let newest: Vec<String> = entries
                    .iter()
                    .skip(entries.len().saturating_sub(s.replay_cap))
                    .map(|r| r.stored(&self.replay_devices, &mut prefixes, &s.privacy))
                    .collect();
                p.lpush(&key, newest).ignore();
                p.ltrim(&key, 0, s.replay_cap as isize - 1).ignore();
                p.expire(&key, s.anonymous_ttl_secs.min(s.ttl_secs) as i64).ignore();
            }
        }
        if s.auth_burst_window_secs > 0 && !self.failures.is_empty() {
            if let Some(settings) = &s.detect {
                p.cmd("SCRIPT").arg("LOAD").arg(detect::auth_burst_script()).ignore();
                for (window, failures) in self.failures_by_window(s.auth_burst_window_secs, &s.privacy) {
                    p.add_command(detect::auth_burst_cmd(window, s.auth_burst_window_secs, &failures, settings)).ignore();
                }
            }
        }
        if !self.behavior.is_empty() {
            // One script call per signed-in user, and one trim of who is online (the TOUCH
            // calls above added this batch's signed-in sessions to it).
            p.cmd("SCRIPT").arg("LOAD").arg(user_behavior::BEHAVIOR).ignore();
            for (user, sums) in &self.behavior {
                p.add_command(user_behavior::behavior_cmd(user, sums, s.ttl_secs)).ignore();
            }
            p.zremrangebyrank(keys::online_sessions(), 0, -(keys::ONLINE_SESSIONS_CAP as isize) - 1).ignore();
        }
        for (sid, ts, reason) in &self.ends {
            p.add_command(session_scripts::end_for(sid, *ts, *reason, s.idle_timeout_ms, s.ttl_secs, s.anonymous_ttl_secs)).ignore();
        }
        p
    }

    /// One journey script call per session with a landing candidate or a goal (a page view's
    /// template, an action's name) in this batch.
    fn journey_commands(&self, p: &mut redis::Pipeline, s: &WriteSettings) {
        let none = SessionJourney::default();
        let sids: BTreeSet<&str> =
            self.journeys.keys().map(String::as_str).chain(self.actions.iter().filter(|(_, a)| !a.is_empty()).map(|(sid, _)| sid.as_str())).collect();
        if sids.is_empty() {
            return;
        }
        p.cmd("SCRIPT").arg("LOAD").arg(journey::JOURNEY).ignore();
        let mut period_keys = journey::PeriodKeys::default();
        for sid in sids {
            let touch = self.touches.get(sid);
            let user = touch.and_then(|t| t.user_id.as_deref());
            let page_views = touch.map_or(0, |t| t.page_views);
            let goals: Vec<(i64, &str)> = self
                .actions
                .get(sid)
                .map(|acts| {
                    acts.iter().map(|a| (a.ts_ms, if a.name == "page_view" { a.page.as_deref().unwrap_or_default() } else { a.name.as_ref() })).collect()
                })
                .unwrap_or_default();
            let journey_ttl = if user.is_some() { s.ttl_secs } else { s.anonymous_ttl_secs.min(s.ttl_secs) };
            let j = self.journeys.get(sid).unwrap_or(&none);
            p.add_command(journey::journey_cmd(&mut period_keys, sid, user, page_views, j, &goals, journey_ttl, s.ttl_secs, s.acquisition_all_navigations))
                .ignore();
        }
    }

    /// The batch's invalid credentials by window start (unix seconds) and address; beyond
    /// [`detect::MAX_FAILING_ADDRESSES_PER_BATCH`] addresses per window the rest count as `other`.
    fn failures_by_window(&self, window_secs: u32, privacy: &Privacy) -> BTreeMap<i64, BTreeMap<String, detect::AuthFailures>> {
        let w = i64::from(window_secs);
        let mut out: BTreeMap<i64, BTreeMap<String, detect::AuthFailures>> = BTreeMap::new();
        for (ts_ms, ip, fp, kind) in &self.failures {
            let Some(mut addr) = privacy.burst_address(*ip, *ts_ms) else { continue };
            let window = out.entry(ts_ms.div_euclid(1000).div_euclid(w) * w).or_default();
            if !window.contains_key(&addr) && window.len() >= detect::MAX_FAILING_ADDRESSES_PER_BATCH {
                addr = keys::OTHER.to_owned();
            }
            let f = window.entry(addr).or_default();
            if f.credentials.len() < detect::MAX_FAILED_CREDENTIALS {
                f.credentials.insert(hex::encode(fp));
            }
            *f.kinds.entry(kind).or_default() += 1;
            f.last_ts_ms = f.last_ts_ms.max(*ts_ms);
        }
        out
    }

    /// Commands in the pipeline (for the commands-per-request figure).
    pub fn command_count(&self, s: &WriteSettings) -> usize {
        self.to_pipeline(s).cmd_iter().count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::device::DeviceKind;
    use crate::identity::{AuthSource, Identity};
    use std::sync::Arc;

    /// Writes with a one-minute TTL, no detectors or replay, nothing reduced or sealed.
    fn test_settings(actions_cap: usize) -> WriteSettings {
        WriteSettings {
            ttl_secs: 60,
            anonymous_ttl_secs: 60,
            actions_cap,
            idle_timeout_ms: 1000,
            detect: None,
            replay_cap: 0,
            auth_burst_window_secs: 0,
            privacy: Arc::new(Privacy::plain()),
            acquisition_all_navigations: false,
        }
    }

    fn event(ts_ms: i64, sid: Option<&str>, user: Option<&str>, path: &str, status: u16) -> RequestEvent {
        RequestEvent {
            ts_ms,
            sid: sid.map(str::to_owned),
            identity: user.map(|u| {
                Arc::new(Identity {
                    user_id: u.into(),
                    email: None,
                    role: None,
                    session_id: sid.unwrap_or("").into(),
                    source: AuthSource::FlaskSession,
                    aal: None,
                    methods: vec![],
                    authenticated_at: None,
                })
            }),
            method: http::Method::GET,
            path: path.into(),
            template: path.into(),
            request_id: "r".into(),
            auth_outcome: "flask_redis_hit",
            failed_credential: None,
            status,
            latency_us: 1500,
            upstream_latency_us: Some(1000),
            bytes_in: 10,
            bytes_out: 100,
            ip: Some("81.2.69.1".parse().unwrap()),
            user_agent: None,
            referrer: None,
            query: None,
            host: None,
            navigation: true,
            gpc: false,
            dnt: false,
            signal: SessionSignal::None,
        }
    }

    fn device() -> Device {
        Device { browser: "Chrome".into(), os: "Linux".into(), kind: DeviceKind::Desktop }
    }

    fn batch_of(n: i64) -> Batch {
        let d = device();
        let loc = Location { country: Some("GB".into()), city: Some("London".into()), point: None, asn: None };
        let evs: Vec<RequestEvent> = (0..n).map(|i| event(1_796_043_900_000 + i, Some("s1"), Some("u1"), "/x", 200)).collect();
        let mut b = Batch::default();
        for (i, ev) in evs.iter().enumerate() {
            b.add_request(&Enriched { event: ev, template: "/x", page_view: i % 2 == 0, action: None, private: false, device: &d, location: &loc });
        }
        b
    }

    #[test]
    fn counters_are_summed_per_batch() {
        let b = batch_of(10);
        let day = Period::Day.slot(1_796_043_900_000);
        assert_eq!(day.label(), "2026-11-30");
        assert_eq!(b.analytics[&day]["hits"], 10);
        assert_eq!(b.analytics[&day]["page_views"], 5);
        assert_eq!(b.breakdowns[&(day, "pages")]["/x"], 5);
        assert_eq!(b.metrics[&day]["latency_le_1ms"], 10);
        let t = &b.touches["s1"];
        assert_eq!((t.hits, t.page_views, t.user_id.as_deref()), (10, 5, Some("u1")));
        assert_eq!(b.actions["s1"].len(), 5);
        // The command count depends on distinct keys and fields, not on the number of events.
        let s = test_settings(100);
        assert_eq!(b.command_count(&s), batch_of(1000).command_count(&s));
    }

    /// Signed-in requests cost one behaviour script call per user per batch (and one load and
    /// one trim of the online index per batch); anonymous ones cost nothing more.
    #[test]
    fn behavior_costs_one_command_per_user_per_batch() {
        let d = device();
        let loc = Location::default();
        let evs: Vec<RequestEvent> = (0..20)
            .map(|i| event(1_796_043_900_000 + i, Some(if i % 2 == 0 { "s1" } else { "s2" }), Some(if i % 2 == 0 { "u1" } else { "u2" }), "/x", 200))
            .chain((0..5).map(|i| event(1_796_043_900_100 + i, Some("s3"), None, "/y", 200)))
            .collect();
        let mut b = Batch::default();
        for ev in &evs {
            b.add_request(&Enriched { event: ev, template: &ev.path, page_view: true, action: None, private: false, device: &d, location: &loc });
        }
        assert_eq!(b.behavior["u1"].routes["/x"], 10);
        assert_eq!(b.behavior["u2"].devices, vec![("Chrome|Linux|desktop".to_owned(), 10)]);
        assert!(!b.behavior.contains_key(""), "anonymous requests count for nobody");
        let s = test_settings(10);
        let cmds: Vec<String> = b.to_pipeline(&s).cmd_iter().map(|c| String::from_utf8_lossy(&c.get_packed_command()).into_owned()).collect();
        let count = |needle: &str| cmds.iter().filter(|c| c.contains(needle)).count();
        assert_eq!(count(user_behavior::behavior_sha()), 2);
        assert_eq!(count("local ttl, other = ARGV[1], ARGV[4]"), 1, "the script is loaded once");
        assert_eq!(count("ZREMRANGEBYRANK\r\n$19\r\nsting:active:online"), 1);
        // Anonymous requests, and a signed-in one that asked not to be tracked.
        let mut anonymous = Batch::default();
        for ev in &evs[19..] {
            let private = ev.identity.is_some();
            anonymous.add_request(&Enriched { event: ev, template: &ev.path, page_view: true, action: None, private, device: &d, location: &loc });
        }
        let cmds: Vec<String> = anonymous.to_pipeline(&s).cmd_iter().map(|c| String::from_utf8_lossy(&c.get_packed_command()).into_owned()).collect();
        assert!(
            anonymous.behavior.is_empty()
                && !cmds.iter().any(|c| c.contains(user_behavior::behavior_sha()) || c.contains("ZREMRANGEBYRANK\r\n$19\r\nsting:active:online"))
        );
    }

    /// Issue 17's cost: one journey call per session with a page view or an action in the batch
    /// (whatever its number of requests), one retention call per batch with a user, and no
    /// journey call for a session with neither.
    #[test]
    fn journeys_cost_one_call_per_session_and_retention_one_per_batch() {
        let d = device();
        let loc = Location::default();
        let evs: Vec<RequestEvent> = (0..30)
            .map(|i| event(1_796_043_900_000 + i, Some(if i % 2 == 0 { "s1" } else { "s2" }), Some(if i % 2 == 0 { "u1" } else { "u2" }), "/x", 200))
            .chain(std::iter::once(event(1_796_043_900_100, Some("s3"), None, "/static/a.js", 200)))
            .collect();
        let mut b = Batch::default();
        for ev in &evs {
            let page_view = ev.path != "/static/a.js";
            b.add_request(&Enriched { event: ev, template: &ev.path, page_view, action: None, private: false, device: &d, location: &loc });
            if let Some(sid) = ev.sid.as_deref().filter(|sid| page_view && !b.has_landing(sid)) {
                b.add_landing(sid, ev.ts_ms, crate::capture::acquisition::source(Some("https://t.co/x"), Some("app.example"), None), false);
            }
        }
        assert_eq!(b.journeys["s1"].landings.len(), 1, "only the first page view of the batch is a candidate");
        let cmds: Vec<String> = b.to_pipeline(&test_settings(10)).cmd_iter().map(|c| String::from_utf8_lossy(&c.get_packed_command()).into_owned()).collect();
        let count = |needle: &str| cmds.iter().filter(|c| c.contains(needle)).count();
        assert_eq!(count(journey::journey_sha()), 2, "s1 and s2, not the asset-only s3");
        assert_eq!(count(retention::retain_sha()), 1);
        assert_eq!(count("sting:analytics:daily:2026-11-30:acq:referrers"), 2);
        let touch = cmds.iter().position(|c| c.contains(session_scripts::touch_sha())).unwrap();
        let journey = cmds.iter().position(|c| c.contains(journey::journey_sha())).unwrap();
        assert!(touch < journey, "the journey reads what its session's touch wrote");
    }

    #[test]
    fn field_names_follow_the_schema() {
        assert_eq!(
            (latency_field(0), latency_field(1), latency_field(2), latency_field(3)),
            ("latency_le_1ms", "latency_le_1ms", "latency_le_2ms", "latency_le_5ms")
        );
        assert_eq!((latency_field(10_000), latency_field(10_001)), ("latency_le_10000ms", "latency_gt_max"));
        assert_eq!((status_field(204), status_field(404), status_field(503), status_field(0)), ("status_2xx", "status_4xx", "status_5xx", "status_other"));
    }

    #[test]
    fn keys_carry_each_events_period_and_only_the_newest_actions_are_written() {
        let d = device();
        let loc = Location::default();
        // 23:59:59.000 and the next midnight, UTC.
        let (before, after) = (1_796_083_199_000, 1_796_083_200_000);
        let evs = [event(before, Some("s1"), None, "/a", 200), event(after, Some("s1"), None, "/b", 200), event(after + 1, Some("s1"), None, "/c", 200)];
        let mut b = Batch::default();
        for ev in &evs {
            b.add_request(&Enriched { event: ev, template: &ev.path, page_view: true, action: None, private: false, device: &d, location: &loc });
        }
        let cmds: Vec<String> = b.to_pipeline(&test_settings(2)).cmd_iter().map(|c| String::from_utf8_lossy(&c.get_packed_command()).into_owned()).collect();
        let all = cmds.join("\n");
        for key in [
            "sting:analytics:daily:2026-11-30",
            "sting:analytics:daily:2026-12-01",
            "sting:analytics:hourly:2026-11-30T23",
            "sting:analytics:hourly:2026-12-01T00",
        ] {
            assert!(all.contains(key), "{key} missing");
        }
        let push = cmds.iter().find(|c| c.contains("\r\nLPUSH\r\n")).expect("actions are pushed");
        assert!(!push.contains("\"/a\"") && push.contains("\"/b\"") && push.contains("\"/c\""), "only the newest 2 actions: {push}");
        assert!(push.find("\"/b\"").unwrap() < push.find("\"/c\"").unwrap(), "in time order (LPUSH puts the last on top): {push}");
    }

    #[test]
    fn a_batch_keeps_the_first_address_and_device_and_the_latest_known_place() {
        let chrome = device();
        let unknown = Device { browser: crate::capture::device::UNKNOWN.into(), os: crate::capture::device::UNKNOWN.into(), kind: DeviceKind::Other };
        let london = Location { country: Some("GB".into()), city: Some("London".into()), point: None, asn: None };
        let nowhere = Location::default();
        let first = event(1_796_043_900_000, Some("s1"), Some("u1"), "/", 200);
        let mut second = event(1_796_043_900_001, Some("s1"), Some("u1"), "/static/a.js", 200);
        second.ip = Some("127.0.0.1".parse().unwrap());
        let mut b = Batch::default();
        b.add_request(&Enriched { event: &first, template: "/", page_view: true, action: None, private: false, device: &chrome, location: &london });
        b.add_request(&Enriched {
            event: &second,
            template: "/static/a.js",
            page_view: false,
            action: None,
            private: false,
            device: &unknown,
            location: &nowhere,
        });
        let t = &b.touches["s1"];
        assert_eq!((t.first_ip, t.ip), (Some("81.2.69.1".parse().unwrap()), Some("127.0.0.1".parse().unwrap())));
        assert_eq!((t.browser.as_str(), t.country.as_str(), t.city.as_str()), ("Chrome", "GB", "London"));
    }

    #[test]
    fn logout_signal_ends_the_session_after_its_touch() {
        let d = device();
        let loc = Location::default();
        let mut ev = event(1_796_043_900_000, Some("s1"), Some("u1"), "/logout", 200);
        ev.signal = SessionSignal::Cleared { sid: "s1".into() };
        let mut b = Batch::default();
        b.add_request(&Enriched { event: &ev, template: "/logout", page_view: false, action: None, private: false, device: &d, location: &loc });
        assert_eq!(b.ends, vec![("s1".to_owned(), 1_796_043_900_000, EndReason::Logout)]);
        let cmds: Vec<String> = b.to_pipeline(&test_settings(10)).cmd_iter().map(|c| String::from_utf8_lossy(&c.get_packed_command()).into_owned()).collect();
        let load = cmds.iter().position(|c| c.contains("SCRIPT") && c.contains("local h, sid = KEYS[1], ARGV[1]")).unwrap();
        let touch = cmds.iter().position(|c| c.contains(session_scripts::touch_sha())).unwrap();
        let end = cmds.iter().position(|c| c.contains(session_scripts::end_sha()) && c.contains("logout")).unwrap();
        assert!(load < touch, "the script is loaded before its first use");
        assert!(touch < end);
    }
}
