//! The Kratos fallback: `GET /sessions/whoami` with the caller's credential, cached in process
//! and in Redis, collapsed per credential, bounded by a timeout and a circuit breaker. I/O.
//!
//! Kratos rate-limits whoami and sends `Cache-Control: no-store`; caching is our decision,
//! bounded by the session's `expires_at` and `kratos.cache_ttl_seconds`. Answers that say "no
//! session" (401) or "needs a second factor" (403 `session_aal2_required`) are cached for
//! `negative_cache_ttl_seconds`. Failures (timeouts, 5xx) are never cached: they count towards
//! the circuit breaker and the caller is treated as anonymous (fail closed for protected
//! routes, open for public ones). Kratos's 429 fails that lookup too, but for the circuit it
//! counts as Kratos being up. Unknown credentials from one client address are limited per minute
//! ([`ClientLimiter`]), so a flood of random tokens from a few addresses neither floods Kratos
//! nor opens the circuit for everyone else.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use moka::sync::Cache;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::KratosSection;
use crate::identity::client_limit::ClientLimiter;
use crate::identity::single_flight::SingleFlight;
use crate::identity::{AuthSource, Identity};
use crate::store::circuit_breaker::{CircuitBreaker, CircuitState};
use crate::store::field_cipher;
use crate::store::keys;
use crate::store::RedisStore;

/// A Kratos credential found on the request, in Kratos's own order of preference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential<'a> {
    SessionToken(&'a str),
    /// Unquoted as the app reads it, so owned when the header quoted it.
    Cookie(std::borrow::Cow<'a, str>),
    Bearer(&'a str),
}

impl Credential<'_> {
    /// SHA-256 over a kind tag and the value: the cache key. The credential itself is never stored.
    pub fn fingerprint(&self) -> [u8; 32] {
        let (tag, v) = match self {
            Credential::SessionToken(v) => (b't', v),
            Credential::Cookie(v) => (b'c', &v.as_ref()),
            Credential::Bearer(v) => (b'b', v),
        };
        let mut h = Sha256::new();
        h.update([tag, b':']);
        h.update(v.as_bytes());
        h.finalize().into()
    }
}

/// What whoami said (or what we remember it said).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum WhoamiAnswer {
    Authenticated { identity: Identity, expires_at: Option<i64> },
    Unauthenticated,
    Aal2Required { redirect_browser_to: Option<String> },
}

/// The outcome for one request, including the cases we do not cache.
#[derive(Debug, Clone)]
pub enum KratosOutcome {
    Answer {
        answer: Arc<WhoamiAnswer>,
        from: AnswerSource,
    },
    /// Kratos failed, timed out, or the circuit is open.
    Unavailable(&'static str),
    /// This client made too many uncached lookups; nothing was asked.
    RateLimited,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnswerSource {
    Memory,
    Redis,
    Kratos,
}

/// Parses a whoami response. Pure; the unit tests feed it Kratos's real bodies.
///
/// The role is read from `identity.metadata_public[role_key]`, which only Kratos's admin API
/// writes. Traits are the user's own (registration and settings flows edit them), so
/// `traits[role_key]` is consulted only when `role_from_traits` is set, and only when
/// `metadata_public` has no role.
pub fn parse_whoami(status: u16, body: &[u8], role_key: &str, role_from_traits: bool, now: DateTime<Utc>) -> Result<WhoamiAnswer, String> {
    match status {
        200 => {
            let s: WhoamiSession = serde_json::from_slice(body).map_err(|e| format!("whoami 200 body: {e}"))?;
            if s.active == Some(false) || s.expires_at.is_some_and(|t| t <= now) {
                return Ok(WhoamiAnswer::Unauthenticated);
            }
            let identity = s.identity.ok_or("whoami 200 body has no identity")?;
            let trait_str = |v: &Option<serde_json::Value>, k: &str| v.as_ref().and_then(|t| t.get(k)).and_then(|x| x.as_str()).map(str::to_owned);
            let role = trait_str(&identity.metadata_public, role_key).or_else(|| role_from_traits.then(|| trait_str(&identity.traits, role_key)).flatten());
            Ok(WhoamiAnswer::Authenticated {
                identity: Identity {
                    user_id: identity.id,
                    email: trait_str(&identity.traits, "email"),
                    role,
                    session_id: s.id,
                    source: AuthSource::Kratos,
                    aal: s.authenticator_assurance_level,
                    methods: s.authentication_methods.unwrap_or_default().into_iter().filter_map(|m| m.method).collect(),
                    authenticated_at: s.authenticated_at.map(|t| t.timestamp()),
                },
                expires_at: s.expires_at.map(|t| t.timestamp()),
            })
        }
        401 => Ok(WhoamiAnswer::Unauthenticated),
        403 => {
            let e: WhoamiError = serde_json::from_slice(body).unwrap_or_default();
            if e.error.as_ref().and_then(|x| x.id.as_deref()) == Some("session_aal2_required") {
                let redirect = e.redirect_browser_to.or_else(|| e.error.and_then(|x| x.details).and_then(|d| d.redirect_browser_to));
                Ok(WhoamiAnswer::Aal2Required { redirect_browser_to: redirect })
            } else {
                Ok(WhoamiAnswer::Unauthenticated)
            }
        }
        429 => Err(THROTTLED.into()),
        other => Err(format!("whoami answered {other}")),
    }
}

/// The error of a whoami answered with 429 Too Many Requests.
const THROTTLED: &str = "whoami answered 429 (Kratos rate limit)";

#[derive(Deserialize)]
struct WhoamiSession {
    id: String,
    active: Option<bool>,
    expires_at: Option<DateTime<Utc>>,
    authenticator_assurance_level: Option<String>,
    authenticated_at: Option<DateTime<Utc>>,
    authentication_methods: Option<Vec<WhoamiMethod>>,
    identity: Option<WhoamiIdentity>,
}

#[derive(Deserialize)]
struct WhoamiMethod {
    method: Option<String>,
}

#[derive(Deserialize)]
struct WhoamiIdentity {
    id: String,
    traits: Option<serde_json::Value>,
    metadata_public: Option<serde_json::Value>,
}

#[derive(Deserialize, Default)]
struct WhoamiError {
    error: Option<WhoamiErrorBody>,
    redirect_browser_to: Option<String>,
}

#[derive(Deserialize)]
struct WhoamiErrorBody {
    id: Option<String>,
    details: Option<WhoamiErrorDetails>,
}

#[derive(Deserialize)]
struct WhoamiErrorDetails {
    redirect_browser_to: Option<String>,
}

/// Largest whoami body we read; real ones are a few KiB.
const MAX_BODY: usize = 256 * 1024;

/// A remembered answer and when it stops being good.
#[derive(Clone)]
struct Remembered {
    answer: Arc<WhoamiAnswer>,
    until: Instant,
}

pub struct KratosClient {
    whoami_url: String,
    /// `kratos.admin_url`, empty when not configured.
    admin_url: String,
    cookie_name: String,
    role_key: String,
    role_from_traits: bool,
    http: reqwest::Client,
    store: RedisStore,
    memory: Cache<[u8; 32], Remembered>,
    flights: SingleFlight<[u8; 32], KratosOutcome>,
    breaker: CircuitBreaker,
    limiter: Option<ClientLimiter>,
    cache_ttl: Duration,
    negative_ttl: Duration,
    memory_ttl: Duration,
}

impl KratosClient {
    /// `memory_ttl` bounds the in-process copy (the Redis copy lives up to `cache_ttl`).
    pub fn new(cfg: &KratosSection, store: RedisStore, memory_ttl: Duration) -> reqwest::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_millis(cfg.timeout_ms))
            .connect_timeout(Duration::from_millis(cfg.timeout_ms))
            .redirect(reqwest::redirect::Policy::none())
            .pool_idle_timeout(Duration::from_secs(30))
            .build()?;
        Ok(Self {
            whoami_url: format!("{}/sessions/whoami", cfg.public_url),
            admin_url: cfg.admin_url.clone(),
            cookie_name: cfg.cookie_name.clone(),
            role_key: cfg.role_trait.clone(),
            role_from_traits: cfg.role_from_traits,
            http,
            store,
            memory: Cache::builder().max_capacity(100_000).build(),
            flights: SingleFlight::default(),
            breaker: CircuitBreaker::new(cfg.circuit_failure_threshold, Duration::from_secs(cfg.circuit_open_seconds)),
            limiter: ClientLimiter::new(cfg.lookups_per_client_per_minute),
            cache_ttl: Duration::from_secs(cfg.cache_ttl_seconds),
            negative_ttl: Duration::from_secs(cfg.negative_cache_ttl_seconds),
            memory_ttl,
        })
    }

    pub fn cookie_name(&self) -> &str {
        &self.cookie_name
    }

    pub fn circuit_state(&self) -> CircuitState {
        self.breaker.state()
    }

    /// Who `credential` belongs to: memory, then Redis, then one whoami call per credential,
    /// if `client` has not used up its uncached lookups.
    pub async fn resolve(&self, credential: Credential<'_>, client: Option<IpAddr>) -> KratosOutcome {
        let fp = credential.fingerprint();
        if let Some(r) = self.memory.get(&fp) {
            if r.until > Instant::now() {
                return KratosOutcome::Answer { answer: r.answer, from: AnswerSource::Memory };
            }
            self.memory.invalidate(&fp);
        }
        let led = std::sync::atomic::AtomicBool::new(false);
        let outcome = self
            .flights
            .run(fp, || {
                led.store(true, std::sync::atomic::Ordering::Relaxed);
                self.resolve_uncached(&credential, fp, client)
            })
            .await;
        match outcome {
            // The lookup this caller joined was refused for another client's address: that
            // client's limit is not this one's, so it asks on its own account.
            KratosOutcome::RateLimited if !led.load(std::sync::atomic::Ordering::Relaxed) => self.resolve_uncached(&credential, fp, client).await,
            other => other,
        }
    }

    /// Revokes a Kratos session through the admin API (`DELETE /admin/sessions/{id}`); `None`
    /// without `kratos.admin_url` or when `id` cannot be a Kratos id, `Some(Ok(true))` when
    /// Kratos revoked it, `Some(Ok(false))` when Kratos did not know it.
    pub async fn revoke_session(&self, id: &str) -> Option<Result<bool, String>> {
        self.admin_delete(&format!("/admin/sessions/{id}"), id).await
    }

    /// Revokes every Kratos session of an identity (`DELETE /admin/identities/{id}/sessions`).
    pub async fn revoke_identity_sessions(&self, identity_id: &str) -> Option<Result<bool, String>> {
        self.admin_delete(&format!("/admin/identities/{identity_id}/sessions"), identity_id).await
    }

    async fn admin_delete(&self, path: &str, id: &str) -> Option<Result<bool, String>> {
        // Kratos ids are UUIDs: anything else would not name one (and must not shape the URL).
        if self.admin_url.is_empty() || id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            return None;
        }
        let r = self.http.delete(format!("{}{path}", self.admin_url)).send().await;
        Some(match r {
            Ok(resp) if resp.status().is_success() => Ok(true),
            Ok(resp) if resp.status() == http::StatusCode::NOT_FOUND => Ok(false),
            Ok(resp) => Err(format!("Kratos admin API answered {}", resp.status().as_u16())),
            Err(e) => Err(format!("Kratos admin API unreachable: {e}")),
        })
    }

    /// Forgets a credential (its cookie was cleared: Kratos logout).
    pub async fn forget(&self, credential: Credential<'_>) {
        let fp = credential.fingerprint();
        self.memory.invalidate(&fp);
        let _ = self.store.query::<()>(redis::cmd("DEL").arg(keys::kratos_cache(&hex::encode(fp)))).await;
    }

    async fn resolve_uncached(&self, credential: &Credential<'_>, fp: [u8; 32], client: Option<IpAddr>) -> KratosOutcome {
        let key = keys::kratos_cache(&hex::encode(fp));
        // Redis copy shared by every proxy instance; a Redis failure just means asking Kratos.
        if let Ok((Some(raw), pttl)) = self.store.pipeline::<(Option<Vec<u8>>, i64)>(redis::pipe().get(&key).pttl(&key)).await {
            // Sealed whole when personal fields are encrypted (it holds the email); one that
            // cannot be opened (a key rotated away) is a miss.
            let opened = String::from_utf8(raw).ok().and_then(|s| field_cipher::shown(&s));
            if let Some(answer) = opened.and_then(|s| serde_json::from_str::<WhoamiAnswer>(&s).ok()) {
                let ttl = Duration::from_millis(pttl.max(0) as u64);
                return self.remember(fp, Arc::new(answer), ttl, AnswerSource::Redis);
            }
        }
        let m = crate::observe::metrics::metrics();
        // An open circuit refuses before the limit is consulted, so it spends no client's allowance.
        if self.breaker.state() == CircuitState::Open {
            m.kratos_calls.with_label_values(&["circuit_open"]).inc();
            return KratosOutcome::Unavailable("circuit open");
        }
        if let (Some(limiter), Some(ip)) = (&self.limiter, client) {
            if !limiter.allow(ip) {
                m.kratos_calls.with_label_values(&["client_rate_limited"]).inc();
                return KratosOutcome::RateLimited;
            }
        }
        if !self.breaker.allow() {
            m.kratos_calls.with_label_values(&["circuit_open"]).inc();
            return KratosOutcome::Unavailable("circuit open");
        }
        let started = Instant::now();
        let result = self.call(credential).await;
        m.kratos_seconds.observe(started.elapsed().as_secs_f64());
        let answer = match result {
            Ok(a) => {
                self.breaker.record_success();
                m.kratos_calls.with_label_values(&["answered"]).inc();
                m.kratos_circuit_state.set(circuit_gauge(self.breaker.state()));
                a
            }
            Err(CallError::Throttled) => {
                // Kratos is up and pacing us: not a reason to stop asking for everyone. As an
                // answer from a live Kratos it also ends a half-open probe (closes the circuit).
                self.breaker.record_success();
                m.kratos_circuit_state.set(circuit_gauge(self.breaker.state()));
                m.kratos_calls.with_label_values(&["throttled"]).inc();
                tracing::warn!(reason = THROTTLED, "Kratos whoami throttled");
                return KratosOutcome::Unavailable("kratos throttled");
            }
            Err(CallError::Refused(reason)) => {
                // Kratos is up: a probe that gets this closes the circuit like any answer.
                self.breaker.record_success();
                m.kratos_calls.with_label_values(&["refused"]).inc();
                m.kratos_circuit_state.set(circuit_gauge(self.breaker.state()));
                tracing::debug!(%reason, "Kratos whoami refused the credential");
                return KratosOutcome::Unavailable("kratos refused");
            }
            Err(CallError::Down(reason)) => {
                self.breaker.record_failure();
                m.kratos_calls.with_label_values(&["error"]).inc();
                m.kratos_circuit_state.set(circuit_gauge(self.breaker.state()));
                tracing::warn!(%reason, "Kratos whoami failed");
                return KratosOutcome::Unavailable("kratos error");
            }
        };
        let ttl = self.ttl_for(&answer, Utc::now());
        if !ttl.is_zero() {
            if let Ok(json) = serde_json::to_string(&answer) {
                let cmd = redis::cmd("SET").arg(&key).arg(field_cipher::installed().seal(&json)).arg("PX").arg(ttl.as_millis() as u64).clone();
                let store = self.store.clone();
                // Sharing the answer with other instances must not delay this request.
                tokio::spawn(async move {
                    let _ = store.query::<()>(&cmd).await;
                });
            }
        }
        self.remember(fp, Arc::new(answer), ttl, AnswerSource::Kratos)
    }

    fn remember(&self, fp: [u8; 32], answer: Arc<WhoamiAnswer>, ttl: Duration, from: AnswerSource) -> KratosOutcome {
        let local = ttl.min(self.memory_ttl);
        if !local.is_zero() {
            self.memory.insert(fp, Remembered { answer: answer.clone(), until: Instant::now() + local });
        }
        KratosOutcome::Answer { answer, from }
    }

    /// How long an answer may be reused: positive ones until `min(expires_at, cache_ttl)`.
    fn ttl_for(&self, answer: &WhoamiAnswer, now: DateTime<Utc>) -> Duration {
        match answer {
            WhoamiAnswer::Authenticated { expires_at, .. } => {
                let left = expires_at.map(|e| Duration::from_secs((e - now.timestamp()).max(0) as u64)).unwrap_or(self.cache_ttl);
                left.min(self.cache_ttl)
            }
            _ => self.negative_ttl,
        }
    }

    async fn call(&self, credential: &Credential<'_>) -> Result<WhoamiAnswer, CallError> {
        let req = self.http.get(&self.whoami_url).header("accept", "application/json");
        let req = match credential {
            Credential::SessionToken(t) => req.header("x-session-token", *t),
            Credential::Cookie(c) => req.header("cookie", format!("{}={c}", self.cookie_name)),
            Credential::Bearer(t) => req.header("authorization", format!("Bearer {t}")),
        };
        let resp = req.send().await.map_err(|e| CallError::Down(format!("request: {e}")))?;
        let status = resp.status().as_u16();
        if resp.content_length().is_some_and(|l| l as usize > MAX_BODY) {
            return Err(CallError::Refused(format!("whoami body over {MAX_BODY} bytes")));
        }
        let body = resp.bytes().await.map_err(|e| CallError::Down(format!("body: {e}")))?;
        if body.len() > MAX_BODY {
            return Err(CallError::Refused(format!("whoami body over {MAX_BODY} bytes")));
        }
        parse_whoami(status, &body, &self.role_key, self.role_from_traits, Utc::now()).map_err(|reason| match status {
            429 => CallError::Throttled,
            500..=599 => CallError::Down(reason),
            _ => CallError::Refused(reason),
        })
    }
}

/// Why a whoami call gave no answer, and whether it says Kratos is down.
#[derive(Debug)]
enum CallError {
    /// Timeout, connection refused or reset, or a 5xx: counts towards opening the circuit.
    Down(String),
    /// 429: Kratos is up and pacing us.
    Throttled,
    /// Kratos answered, with something other than a session (a 400 for a malformed token, an
    /// unexpected body). A client can provoke that at will, so it never opens the circuit.
    Refused(String),
}

/// The circuit state as the `sting_kratos_circuit_state` gauge value.
fn circuit_gauge(s: CircuitState) -> i64 {
    match s {
        CircuitState::Closed => 0,
        CircuitState::Open => 1,
        CircuitState::HalfOpen => 2,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK: &[u8] = include_bytes!("../../tests/fixtures/kratos/kratos_whoami_200.json");
    const E401: &[u8] = include_bytes!("../../tests/fixtures/kratos/kratos_whoami_401.json");
    const E403: &[u8] = include_bytes!("../../tests/fixtures/kratos/kratos_whoami_403.json");

    fn before_expiry() -> DateTime<Utc> {
        "2026-12-01T09:00:00Z".parse().unwrap()
    }

    #[test]
    fn parses_a_real_session() {
        let a = parse_whoami(200, OK, "role", false, before_expiry()).unwrap();
        let WhoamiAnswer::Authenticated { identity, expires_at } = a else { panic!("{a:?}") };
        assert_eq!(identity.user_id, "5ff66179-c240-4703-b0d8-494592cefff5");
        assert_eq!(identity.session_id, "7458af86-c1d8-401c-978a-8da89133f98b");
        assert_eq!(identity.email.as_deref(), Some("a@b.c"));
        assert_eq!(identity.aal.as_deref(), Some("aal1"));
        assert_eq!(identity.methods, vec!["password".to_string()]);
        assert_eq!(identity.source, AuthSource::Kratos);
        assert_eq!(expires_at, Some("2026-12-02T08:23:19Z".parse::<DateTime<Utc>>().unwrap().timestamp()));
    }

    #[test]
    fn expired_session_is_unauthenticated() {
        let after: DateTime<Utc> = "2026-12-03T00:00:00Z".parse().unwrap();
        assert_eq!(parse_whoami(200, OK, "role", false, after).unwrap(), WhoamiAnswer::Unauthenticated);
    }

    #[test]
    fn parses_401_and_aal2_403() {
        assert_eq!(parse_whoami(401, E401, "role", false, before_expiry()).unwrap(), WhoamiAnswer::Unauthenticated);
        assert_eq!(
            parse_whoami(403, E403, "role", false, before_expiry()).unwrap(),
            WhoamiAnswer::Aal2Required { redirect_browser_to: Some("https://kratos.example.com/self-service/login/browser?aal=aal2".into()) }
        );
        assert_eq!(parse_whoami(429, b"", "role", false, before_expiry()), Err(THROTTLED.to_owned()));
        assert!(parse_whoami(200, b"<html>", "role", false, before_expiry()).is_err());
    }

    fn role_of(v: &serde_json::Value, from_traits: bool) -> Option<String> {
        let a = parse_whoami(200, v.to_string().as_bytes(), "role", from_traits, before_expiry()).unwrap();
        let WhoamiAnswer::Authenticated { identity, .. } = a else { panic!() };
        identity.role
    }

    /// Users edit their own traits: a role there counts only with `role_from_traits`, and
    /// admin-written `metadata_public` wins over it.
    #[test]
    fn role_comes_from_public_metadata_not_traits() {
        let mut v: serde_json::Value = serde_json::from_slice(OK).unwrap();
        v["identity"]["traits"]["role"] = serde_json::json!("admin");
        v["identity"]["metadata_public"] = serde_json::Value::Null;
        assert_eq!(role_of(&v, false), None);
        assert_eq!(role_of(&v, true).as_deref(), Some("admin"));
        v["identity"]["metadata_public"] = serde_json::json!({"role": "user"});
        assert_eq!(role_of(&v, false).as_deref(), Some("user"));
        assert_eq!(role_of(&v, true).as_deref(), Some("user"));
    }

    #[test]
    fn answers_roundtrip_through_the_redis_encoding() {
        let a = parse_whoami(200, OK, "role", false, before_expiry()).unwrap();
        let json = serde_json::to_vec(&a).unwrap();
        assert_eq!(serde_json::from_slice::<WhoamiAnswer>(&json).unwrap(), a);
    }

    #[test]
    fn fingerprints_differ_by_kind() {
        assert_ne!(Credential::Cookie("x".into()).fingerprint(), Credential::Bearer("x").fingerprint());
    }
}
