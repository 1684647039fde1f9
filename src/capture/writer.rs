//! The analytics writer: takes request events off a bounded channel, batches them, enriches
//! each distinct UA and IP once, pre-aggregates, and sends one atomic pipeline per batch. I/O.
//!
//! The request path only ever calls [`CaptureHandle::record`], a `try_send` that never waits:
//! a full queue drops the event and counts it rather than slow a request. On a Redis error the
//! writer keeps its batch and retries with capped backoff; meanwhile new events wait in the
//! queue (bounded). Each batch is one `MULTI`/`EXEC` that also advances this writer's batch
//! number in Redis, so a connection lost before `EXEC` applies nothing and a retry after a
//! lost reply is recognised instead of counted twice, at the cost of one key per process. On SIGTERM the writer takes events for the first half of the grace
//! period (in-flight requests still log) and writes them before it ends.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use tokio::sync::mpsc;

use crate::capture::acquisition::{self, AcquisitionCaps};
use crate::capture::aggregate::{Batch, Enriched, WriteSettings};
use crate::capture::daily_cap::DailyCap;
use crate::capture::detect;
use crate::capture::device::{self, Device};
use crate::capture::geo::{AsnDb, GeoDb, Location};
use crate::capture::privacy::Privacy;
use crate::capture::replay::{ReplayLog, REPLAY_WINDOW};
use crate::capture::request_event::{CaptureEvent, RequestEvent, SessionSignal};
use crate::config::redis_target::RedisMode;
use crate::config::route_template::{self, AssetRules};
use crate::config::security::SecuritySection;
use crate::config::{ActionRuleSection, AnalyticsSection};
use crate::identity::client_limit::ClientLimiter;
use crate::observe::metrics::OTHER_ROUTE;
use crate::store::keys;
use crate::store::{RedisStore, StoreError};

/// Counters of the capture pipeline, logged when the writer stops (and for metrics to come).
#[derive(Default, Debug)]
pub struct CaptureStats {
    pub queued: AtomicU64,
    pub dropped: AtomicU64,
    pub written: AtomicU64,
    pub batches: AtomicU64,
    pub retries: AtomicU64,
    pub commands: AtomicU64,
}

impl CaptureStats {
    pub fn snapshot(&self) -> serde_json::Value {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        serde_json::json!({
            "queued": g(&self.queued), "dropped": g(&self.dropped), "written": g(&self.written),
            "batches": g(&self.batches), "retries": g(&self.retries), "redis_commands": g(&self.commands),
        })
    }
}

/// The sending side, cloned into the proxy and the lifecycle services. Cheap to clone.
#[derive(Clone)]
pub struct CaptureHandle {
    tx: mpsc::Sender<CaptureEvent>,
    pub stats: Arc<CaptureStats>,
}

impl CaptureHandle {
    /// Hands an event to the writer without waiting; a full queue drops it (counted).
    pub fn record(&self, event: CaptureEvent) {
        match self.tx.try_send(event) {
            Ok(()) => {
                self.stats.queued.fetch_add(1, Ordering::Relaxed);
                crate::observe::metrics::metrics().analytics_queued.inc();
            }
            Err(_) => {
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                crate::observe::metrics::metrics().analytics_dropped.inc();
            }
        }
    }

    /// For background producers (expiry listener, sweep) that may wait for room.
    pub async fn send(&self, event: CaptureEvent) {
        if self.tx.send(event).await.is_ok() {
            self.stats.queued.fetch_add(1, Ordering::Relaxed);
            crate::observe::metrics::metrics().analytics_queued.inc();
        }
    }
}

/// Everything the writer needs to turn events into writes; built once from the config.
pub struct Enricher {
    assets: AssetRules,
    actions: Vec<ActionRuleSection>,
    geo: Option<GeoDb>,
    asn: Option<AsnDb>,
}

/// Distinct UAs and IPs remembered between batches; cleared when they grow past this.
const ENRICH_CACHE_MAX: usize = 50_000;

impl Enricher {
    pub fn new(cfg: &AnalyticsSection) -> anyhow::Result<Self> {
        let geo = if cfg.geoip_database.is_empty() { None } else { Some(GeoDb::open(std::path::Path::new(&cfg.geoip_database))?) };
        let asn = if cfg.asn_database.is_empty() { None } else { Some(AsnDb::open(std::path::Path::new(&cfg.asn_database))?) };
        Ok(Self {
            assets: AssetRules { extensions: cfg.asset_extensions.clone(), prefixes: cfg.asset_prefixes.clone() },
            actions: cfg.actions.clone(),
            geo,
            asn,
        })
    }

    fn action_for(&self, method: &http::Method, template: &str) -> Option<&str> {
        self.actions.iter().find(|a| (a.method == "*" || a.method.eq_ignore_ascii_case(method.as_str())) && a.route == template).map(|a| a.name.as_str())
    }
}

/// Longest wait for one batch write outside shutdown.
pub const BATCH_TIMEOUT: Duration = Duration::from_secs(5);

/// The shutdown timeline. pingora cancels background tasks when the grace period ends, so the
/// writer keeps receiving events from in-flight requests for the first half of it and must
/// have written everything before its end.
#[derive(Clone, Copy)]
struct Phase {
    drain_until: Instant,
    hard_deadline: Instant,
}

impl Phase {
    fn starting_now(grace: Duration) -> Self {
        let now = Instant::now();
        Phase { drain_until: now + grace / 2, hard_deadline: now + grace.saturating_sub(Duration::from_millis(200)) }
    }
}

pub struct Writer {
    rx: Mutex<Option<mpsc::Receiver<CaptureEvent>>>,
    store: RedisStore,
    enricher: Enricher,
    settings: WriteSettings,
    max_events: usize,
    /// `analytics.batch_max_sessions`: sessions per Redis transaction.
    max_sessions: usize,
    max_delay: Duration,
    grace: Duration,
    stats: Arc<CaptureStats>,
    max_pages: usize,
    /// `analytics.new_sessions_per_client_per_minute`; `None` = no limit.
    new_sessions: Option<ClientLimiter>,
    /// This process's writer key (`keys::analytics_writer`) and the number of its last batch.
    writer_key: String,
    seq: AtomicU64,
    /// Batches Redis acknowledged in the last few seconds, to send again if a failover lost
    /// them (kept only when Redis can fail over: Sentinel or Cluster).
    replay: Mutex<ReplayLog>,
    /// The store's connection generation when the writer last checked its batches landed.
    checked_generation: AtomicU64,
    /// `server.analytics_cpu`: the CPU this writer's thread is pinned to.
    cpu: Option<usize>,
    /// `[[analytics.funnels]]`, written to Redis when the writer starts.
    funnels: Vec<crate::config::FunnelSection>,
    max_acquisition_values: usize,
}

/// Builds the channel: the handle for producers and the writer service that drains it.
/// `anonymous_ttl_secs`: the app's session lifetime, the longest a record without a user lives.
/// `security`: the anomaly detectors run on signed-in sessions' batches. `privacy`: how
/// addresses and personal fields are stored.
pub fn channel(
    cfg: &AnalyticsSection,
    security: &SecuritySection,
    anonymous_ttl_secs: u64,
    store: RedisStore,
    grace: Duration,
    privacy: Arc<Privacy>,
) -> anyhow::Result<(CaptureHandle, Writer)> {
    let (tx, rx) = mpsc::channel(cfg.queue_capacity);
    let stats = Arc::new(CaptureStats::default());
    let writer = Writer {
        writer_key: keys::analytics_writer(&uuid::Uuid::new_v4().simple().to_string()),
        seq: AtomicU64::new(0),
        replay: Mutex::new(ReplayLog::new(if store.mode() == RedisMode::Standalone { Duration::ZERO } else { REPLAY_WINDOW })),
        checked_generation: AtomicU64::new(store.generation()),
        cpu: None,
        funnels: cfg.funnels.clone(),
        max_acquisition_values: cfg.max_acquisition_values_per_day,
        max_pages: cfg.max_pages_per_day,
        new_sessions: ClientLimiter::new(cfg.new_sessions_per_client_per_minute),
        rx: Mutex::new(Some(rx)),
        store,
        enricher: Enricher::new(cfg)?,
        settings: WriteSettings {
            ttl_secs: cfg.retention_days * 86_400,
            anonymous_ttl_secs,
            actions_cap: cfg.max_actions_per_session.max(1),
            idle_timeout_ms: cfg.idle_timeout_seconds * 1000,
            detect: detect::settings_json(security, cfg.retention_days * 86_400),
            replay_cap: security.replay_max_entries,
            privacy,
            auth_burst_window_secs: if security.severities().iter().any(|(d, sev)| *d == "auth_failure_burst" && sev.is_some()) {
                security.auth_failure_window_seconds
            } else {
                0
            },
            acquisition_all_navigations: cfg.acquisition_all_navigations,
        },
        max_events: cfg.batch_max_events,
        max_sessions: cfg.batch_max_sessions.max(1),
        max_delay: Duration::from_millis(cfg.batch_max_delay_ms),
        grace,
        stats: stats.clone(),
    };
    Ok((CaptureHandle { tx, stats }, writer))
}

struct Caches {
    devices: HashMap<String, Device>,
    locations: HashMap<IpAddr, Location>,
    bot_names: device::BotNames,
    /// Route templates admitted today; later new ones are recorded as `other`.
    pages: DailyCap,
    /// Anonymous sessions this writer has recorded (bounded: emptied when full).
    known_sessions: HashSet<String>,
    /// Referrer domains and UTM values admitted today; later new ones are recorded as `other`.
    acquisition: AcquisitionCaps,
    /// Sessions already given a landing candidate, and users already recorded active today.
    landed: crate::capture::journey::Landed,
    retained: crate::capture::retention::KnownUsers,
}

/// Anonymous sessions remembered as already recorded; past it the set starts again (a
/// forgotten session costs its client one token of its new-session allowance).
const KNOWN_SESSIONS_MAX: usize = 100_000;

impl Writer {
    /// Runs the writer's thread on `cpu` alone (`server.analytics_cpu`).
    pub fn pinned_to(mut self, cpu: Option<usize>) -> Self {
        self.cpu = cpu;
        self
    }

    /// Turns a list of events into one batch of writes, parsing each distinct UA and IP once.
    fn build(&self, events: &[CaptureEvent], caches: &mut Caches) -> Batch {
        if caches.devices.len() > ENRICH_CACHE_MAX {
            caches.devices.clear();
        }
        if caches.locations.len() > ENRICH_CACHE_MAX {
            caches.locations.clear();
        }
        let unknown_device = device::parse("");
        let nowhere = Location::default();
        let mut batch = Batch::default();
        for ev in events {
            match ev {
                CaptureEvent::SessionEnded { sid, ts_ms, reason } => batch.add_end(sid.clone(), *ts_ms, *reason),
                CaptureEvent::Request(r) => {
                    if caches.bot_names.roll(r.ts_ms) {
                        // A new day admits its own bot names: forget yesterday's renames.
                        caches.devices.clear();
                    }
                    if let Some(ua) = &r.user_agent {
                        if !caches.devices.contains_key(ua) {
                            let mut d = device::parse(ua);
                            caches.bot_names.cap(&mut d);
                            caches.devices.insert(ua.clone(), d);
                        }
                    }
                    if let Some(ip) = r.ip.filter(|_| self.enricher.geo.is_some() || self.enricher.asn.is_some()) {
                        caches.locations.entry(ip).or_insert_with(|| {
                            let mut at = self.enricher.geo.as_ref().map(|g| g.lookup(ip)).unwrap_or_default();
                            at.asn = self.enricher.asn.as_ref().and_then(|a| a.lookup(ip));
                            at
                        });
                    }
                }
            }
        }
        for ev in events {
            let CaptureEvent::Request(r) = ev else { continue };
            let refused;
            let r: &RequestEvent = if self.admit_session(r, caches) {
                r
            } else {
                // Over its client's limit: the request counts in the totals, without a session.
                refused = RequestEvent { sid: None, signal: SessionSignal::None, ..RequestEvent::clone(r) };
                &refused
            };
            caches.pages.roll(r.ts_ms);
            let template = if caches.pages.admit(&r.template) { r.template.as_str() } else { OTHER_ROUTE };
            let is_asset = self.enricher.assets.is_asset(&r.path);
            let page_view = route_template::is_page_view(&r.method, r.status, is_asset, r.navigation);
            let device = r.user_agent.as_ref().and_then(|ua| caches.devices.get(ua)).unwrap_or(&unknown_device);
            let location = r.ip.and_then(|ip| caches.locations.get(&ip)).unwrap_or(&nowhere);
            let action = self.enricher.action_for(&r.method, &r.template);
            let private = self.settings.privacy.opted_out(r.gpc, r.dnt);
            batch.add_request(&Enriched { event: r, template, page_view, action, private, device, location });
            if let Some(sid) = r.sid.as_deref().filter(|sid| page_view && caches.landed.candidate(sid, self.settings.acquisition_all_navigations)) {
                let mut source = acquisition::source(r.referrer.as_deref(), r.host.as_deref(), r.query.as_deref());
                caches.acquisition.cap(r.ts_ms, &mut source);
                batch.add_landing(sid, r.ts_ms, source, private);
            }
        }
        batch.keep_new_retention(&mut caches.retained);
        batch
    }

    /// May this request's session be recorded? Always for sessions with a user and for ones
    /// this writer already records; a new anonymous one takes a token of its client's
    /// new-session allowance, so one address dropping its cookie cannot add a record per request.
    fn admit_session(&self, r: &RequestEvent, caches: &mut Caches) -> bool {
        let (Some(sid), None, Some(limiter)) = (&r.sid, &r.identity, &self.new_sessions) else { return true };
        if caches.known_sessions.contains(sid) {
            return true;
        }
        if r.ip.is_some_and(|ip| !limiter.allow(ip)) {
            crate::observe::metrics::metrics().analytics_sessions_refused.inc();
            return false;
        }
        if caches.known_sessions.len() >= KNOWN_SESSIONS_MAX {
            caches.known_sessions.clear();
        }
        caches.known_sessions.insert(sid.clone());
        true
    }

    /// Writes one batch as one `MULTI`/`EXEC`, retrying transient failures with capped backoff.
    ///
    /// The transaction also sets this writer's key to the batch's number (batches of one writer
    /// are written one after another, so the numbers only grow); before each retry the writer
    /// reads it back, because a reply lost after Redis committed would otherwise be counted
    /// twice. At shutdown, retries stop at the hard deadline (pingora cancels the runtime then).
    async fn write(&self, batch: &Batch, shutdown: &mut ShutdownWatch, phase: &mut Option<Phase>) {
        // The connection moved to another master since the last batch: make sure it holds
        // every batch the old one acknowledged.
        let generation = self.store.generation();
        if self.checked_generation.swap(generation, Ordering::Relaxed) != generation {
            if let Err(e) = self.resend_missing(None).await {
                tracing::warn!(error = %e, "could not check the analytics batches after a failover");
            }
        }
        let seq = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
        let mut pipe = batch.to_pipeline(&self.settings);
        pipe.set_ex(&self.writer_key, seq, keys::ANALYTICS_WRITER_TTL_SECS).ignore();
        pipe.atomic();
        let commands = pipe.cmd_iter().count() as u64;
        let mut delay = Duration::from_millis(50);
        let mut attempt = 0u32;
        loop {
            let timeout = match phase {
                Some(p) => p.hard_deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(50)),
                None => BATCH_TIMEOUT,
            };
            // Before a retry: landed already? If that cannot be read either, wait and ask again;
            // never resend blind.
            let result = if attempt == 0 {
                self.store.pipeline_within::<()>(&pipe, timeout).await
            } else {
                match self.store.query::<Option<u64>>(redis::cmd("GET").arg(&self.writer_key)).await {
                    Ok(Some(n)) if n >= seq => Ok(()),
                    // Earlier batches missing too: a failover lost what its master had
                    // acknowledged. Those first, in order, then this one.
                    Ok(n) => match self.resend_missing(Some(n.unwrap_or(0))).await {
                        Ok(()) => self.store.pipeline_within::<()>(&pipe, timeout).await,
                        Err(e) => Err(e),
                    },
                    Err(e) => Err(e),
                }
            };
            attempt += 1;
            let e = match result {
                Ok(()) => {
                    self.replay.lock().unwrap_or_else(|p| p.into_inner()).acknowledged(seq, pipe, Instant::now());
                    self.stats.written.fetch_add(batch.events as u64, Ordering::Relaxed);
                    self.stats.batches.fetch_add(1, Ordering::Relaxed);
                    self.stats.commands.fetch_add(commands, Ordering::Relaxed);
                    let m = crate::observe::metrics::metrics();
                    m.analytics_written.inc_by(batch.events as u64);
                    m.analytics_batch_events.observe(batch.events as f64);
                    return;
                }
                Err(e) => e,
            };
            let out_of_time = phase.as_ref().is_some_and(|p| Instant::now() + delay >= p.hard_deadline);
            if !e.is_transient() || out_of_time {
                tracing::error!(error = %e, events = batch.events, "analytics batch dropped");
                self.stats.dropped.fetch_add(batch.events as u64, Ordering::Relaxed);
                crate::observe::metrics::metrics().analytics_dropped.inc_by(batch.events as u64);
                return;
            }
            self.stats.retries.fetch_add(1, Ordering::Relaxed);
            crate::observe::metrics::metrics().analytics_retried.inc();
            tracing::warn!(error = %e, events = batch.events, retry_in_ms = delay.as_millis() as u64, "analytics write failed; keeping the batch");
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = shutdown.changed(), if phase.is_none() => *phase = Some(Phase::starting_now(self.grace)),
            }
            delay = (delay * 2).min(Duration::from_secs(2));
        }
    }

    /// Sends again, in order, the kept batches the master lacks: those after `landed` (the
    /// number its writer key holds; read here when `None`).
    async fn resend_missing(&self, landed: Option<u64>) -> Result<(), StoreError> {
        if self.replay.lock().unwrap_or_else(|p| p.into_inner()).is_empty() {
            return Ok(());
        }
        let landed = match landed {
            Some(n) => n,
            None => self.store.query::<Option<u64>>(redis::cmd("GET").arg(&self.writer_key)).await?.unwrap_or(0),
        };
        let missing = self.replay.lock().unwrap_or_else(|p| p.into_inner()).after(landed);
        for (_, pipe) in &missing {
            self.store.pipeline_within::<()>(pipe, BATCH_TIMEOUT).await?;
        }
        if !missing.is_empty() {
            crate::observe::metrics::metrics().analytics_batches_resent.inc_by(missing.len() as u64);
            tracing::warn!(batches = missing.len(), after = landed, "a failover lost acknowledged analytics batches: sent them again");
        }
        Ok(())
    }

    /// Collects up to `max_events`, waiting at most `max_delay` after the first; stops early
    /// when shutdown begins (returns true then) so nothing waits out a long batch delay.
    ///
    /// It naps and drains rather than awaiting each event: an awaited `recv` on an empty queue
    /// lets every request wake this thread (thousands of wake-ups a second on the proxy's
    /// cores); napping costs at most `max_delay / COLLECT_NAP` wake-ups per batch.
    async fn collect(
        &self,
        rx: &mut mpsc::Receiver<CaptureEvent>,
        first: CaptureEvent,
        out: &mut Vec<CaptureEvent>,
        shutdown: &mut ShutdownWatch,
        watching: bool,
    ) -> bool {
        out.push(first);
        let until = tokio::time::Instant::now() + self.max_delay;
        loop {
            while out.len() < self.max_events {
                match rx.try_recv() {
                    Ok(ev) => out.push(ev),
                    Err(_) => break,
                }
            }
            let now = tokio::time::Instant::now();
            if out.len() >= self.max_events || now >= until {
                return false;
            }
            tokio::select! {
                _ = tokio::time::sleep((until - now).min(COLLECT_NAP)) => {}
                _ = shutdown.changed(), if watching => {
                    while out.len() < self.max_events {
                        match rx.try_recv() {
                            Ok(ev) => out.push(ev),
                            Err(_) => break,
                        }
                    }
                    return true;
                }
            }
        }
    }
}

/// `events` cut, in order, into runs that each name at most `max_sessions` distinct sessions
/// (requests without a session ride along with their neighbours).
fn session_slices(events: &[CaptureEvent], max_sessions: usize) -> Vec<&[CaptureEvent]> {
    let mut slices = Vec::new();
    let mut seen: HashSet<&str> = HashSet::new();
    let mut start = 0;
    for (i, ev) in events.iter().enumerate() {
        let sid = match ev {
            CaptureEvent::Request(r) => r.sid.as_deref(),
            CaptureEvent::SessionEnded { sid, .. } => Some(sid.as_str()),
        };
        if let Some(sid) = sid {
            if !seen.contains(sid) && seen.len() >= max_sessions {
                slices.push(&events[start..i]);
                start = i;
                seen.clear();
            }
            seen.insert(sid);
        }
    }
    if start < events.len() {
        slices.push(&events[start..]);
    }
    slices
}

impl Writer {
    /// Writes the configured funnels into Redis (where the journey script reads them).
    async fn publish_funnels(&self) {
        if let Some(cmd) = crate::capture::journey::publish_cmd(&self.funnels) {
            if let Err(e) = self.store.query::<()>(&cmd).await {
                tracing::warn!(error = %e, "could not write the configured funnels; they count once written");
            }
        }
    }

    /// A test seam, not used by the proxy: builds and writes `events` as the writer would
    /// (enrichment, caps, one transaction per call), whatever their timestamps, so tests can
    /// record back-dated traffic (retention over weeks, ranges across month ends) through the
    /// real write path. Caches live as long as the [`Backfill`].
    pub fn backfill(self) -> Backfill {
        Backfill { caches: self.new_caches(), writer: self }
    }

    /// Empty caches, bounded by this writer's settings.
    fn new_caches(&self) -> Caches {
        Caches {
            devices: HashMap::new(),
            locations: HashMap::new(),
            bot_names: device::BotNames::default(),
            pages: DailyCap::new(self.max_pages),
            known_sessions: HashSet::new(),
            acquisition: AcquisitionCaps::new(self.max_acquisition_values),
            landed: Default::default(),
            retained: Default::default(),
        }
    }
}

/// See [`Writer::backfill`].
pub struct Backfill {
    writer: Writer,
    caches: Caches,
}

impl Backfill {
    /// Writes `events` as one batch (after publishing the configured funnels); returns the
    /// number of commands sent.
    pub async fn write(&mut self, events: &[CaptureEvent]) -> u64 {
        self.writer.store.connect_once().await.ok();
        self.writer.publish_funnels().await;
        let batch = self.writer.build(events, &mut self.caches);
        let (_tx, mut shutdown): (tokio::sync::watch::Sender<bool>, ShutdownWatch) = tokio::sync::watch::channel(false);
        let before = self.writer.stats.commands.load(Ordering::Relaxed);
        self.writer.write(&batch, &mut shutdown, &mut None).await;
        self.writer.stats.commands.load(Ordering::Relaxed) - before
    }
}

/// How long the writer naps between drains while a batch fills.
const COLLECT_NAP: Duration = Duration::from_millis(5);

#[async_trait]
impl BackgroundService for Writer {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let Some(mut rx) = self.rx.lock().unwrap_or_else(|p| p.into_inner()).take() else { return };
        // Its service runtime has one thread, which runs this future throughout: pin it.
        if let Some(cpu) = self.cpu {
            match crate::config::cpu_affinity::pin_current_thread(cpu) {
                Ok(()) => tracing::info!(cpu, "analytics writer pinned"),
                Err(e) => tracing::warn!(cpu, error = %e, "could not pin the analytics writer; it runs unpinned"),
            }
        }
        // Connect from this service's runtime: the connection's driver task then lives exactly
        // as long as the writer, through the final flush.
        tokio::select! {
            _ = self.store.connect_forever() => {}
            _ = shutdown.changed() => {}
        }
        let mut caches = self.new_caches();
        self.publish_funnels().await;
        let mut events = Vec::with_capacity(self.max_events);
        let mut phase: Option<Phase> = if *shutdown.borrow() { Some(Phase::starting_now(self.grace)) } else { None };
        loop {
            let first = match phase {
                None => tokio::select! {
                    ev = rx.recv() => ev,
                    _ = shutdown.changed() => {
                        phase = Some(Phase::starting_now(self.grace));
                        continue;
                    }
                },
                Some(p) => match tokio::time::timeout_at(p.drain_until.into(), rx.recv()).await {
                    Ok(ev) => ev,
                    Err(_) => rx.try_recv().ok(),
                },
            };
            let Some(first) = first else { break };
            events.clear();
            if self.collect(&mut rx, first, &mut events, &mut shutdown, phase.is_none()).await {
                phase = Some(Phase::starting_now(self.grace));
            }
            // One transaction per slice of at most `max_sessions` sessions: a slice is written
            // exactly like a smaller batch, and no transaction holds Redis for long.
            for slice in session_slices(&events, self.max_sessions) {
                let batch = self.build(slice, &mut caches);
                self.write(&batch, &mut shutdown, &mut phase).await;
            }
        }
        tracing::info!(stats = %self.stats.snapshot(), "analytics writer stopped");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::request_event::EndReason;

    fn request(sid: Option<&str>) -> CaptureEvent {
        CaptureEvent::Request(Arc::new(RequestEvent { sid: sid.map(str::to_owned), ..RequestEvent::default() }))
    }

    fn sids(slice: &[CaptureEvent]) -> Vec<Option<String>> {
        slice
            .iter()
            .map(|e| match e {
                CaptureEvent::Request(r) => r.sid.clone(),
                CaptureEvent::SessionEnded { sid, .. } => Some(sid.clone()),
            })
            .collect()
    }

    #[test]
    fn slices_hold_at_most_n_sessions_and_keep_every_event_in_order() {
        let end = CaptureEvent::SessionEnded { sid: "c".into(), ts_ms: 0, reason: EndReason::Idle };
        let events =
            vec![request(Some("a")), request(None), request(Some("b")), request(Some("a")), end, request(Some("d")), request(None), request(Some("c"))];
        let slices = session_slices(&events, 2);
        let got: Vec<Vec<Option<String>>> = slices.iter().map(|s| sids(s)).collect();
        let s = |x: &str| Some(x.to_owned());
        assert_eq!(got, vec![vec![s("a"), None, s("b"), s("a")], vec![s("c"), s("d"), None, s("c")]]);
        assert_eq!(slices.iter().map(|s| s.len()).sum::<usize>(), events.len());
        // One hot session never splits; no sessions at all is one slice; nothing is no slice.
        let hot: Vec<CaptureEvent> = (0..1000).map(|_| request(Some("hot"))).collect();
        assert_eq!(session_slices(&hot, 1).len(), 1);
        let anonymous: Vec<CaptureEvent> = (0..10).map(|_| request(None)).collect();
        assert_eq!(session_slices(&anonymous, 1).len(), 1);
        assert!(session_slices(&[], 5).is_empty());
    }
}
