//! Security alerts: every anomaly the `DETECT` script records is also appended to the Redis
//! stream [`keys::alert_stream()`]; one consumer group shared by every proxy instance reads it,
//! so each alert is handled by one instance, and one that dies mid-delivery has its alerts
//! claimed by another after [`CLAIM_AFTER`]. Each alert goes to the log and to the webhooks of
//! the matching rules ([`AlertRule`], set through the API), signed like GitHub's and Stripe's
//! webhooks, retried with exponential backoff; and, for the detectors `security.actions` says
//! so for, the session is revoked at once. I/O (Redis, HTTP).

use std::time::Duration;

use async_trait::async_trait;
use hmac::{Hmac, Mac};
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::capture::enforce::Enforcer;
use crate::config::security::Severity;
use crate::store::connection::StoreConnection;
use crate::store::keys;
use crate::store::{RedisStore, StoreError};

/// The consumer group every instance reads the alert stream in.
pub const GROUP: &str = "sting-alerts";

/// An alert one instance took but did not acknowledge this long ago is taken over.
pub const CLAIM_AFTER: Duration = Duration::from_secs(30);

/// Attempts per webhook per alert (the first and the retries, backoff 250 ms doubling).
pub const ATTEMPTS: u32 = 4;

/// Alerts kept in the stream (approximately: `MAXLEN ~`).
pub const STREAM_CAP: usize = 10_000;

/// Rules kept, and webhooks per rule.
pub const MAX_RULES: usize = 32;
pub const MAX_WEBHOOKS: usize = 8;

/// The header carrying the signature: `t=<unix seconds>,v1=<hex HMAC-SHA256 of "t.body">`.
pub const SIGNATURE_HEADER: &str = "x-sting-signature";

/// Where the alerts of one detector (or `*`) at or above a severity go.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertRule {
    /// A detector name, or `*` for all.
    pub detector: String,
    #[serde(default = "low")]
    pub min_severity: String,
    #[serde(default)]
    pub webhooks: Vec<String>,
    /// Write each alert to the proxy's log (warn level).
    #[serde(default)]
    pub log: bool,
    /// `json` (the anomaly as recorded) or `slack` (`{"text": ...}` for an incoming webhook).
    #[serde(default = "json_format")]
    pub format: String,
}

fn low() -> String {
    "low".into()
}

fn json_format() -> String {
    "json".into()
}

/// Checks a rule set from the API: names, severities, URLs, bounds. The message names the
/// offending rule and field.
pub fn validate_rules(rules: &[AlertRule]) -> Result<(), String> {
    if rules.len() > MAX_RULES {
        return Err(format!("at most {MAX_RULES} rules"));
    }
    for (i, r) in rules.iter().enumerate() {
        let known = r.detector == "*" || crate::config::security::DETECTORS.iter().any(|(d, _)| *d == r.detector);
        if !known {
            return Err(format!("rules[{i}].detector: unknown detector {:?}", r.detector));
        }
        if Severity::parse(&r.min_severity).is_none() {
            return Err(format!("rules[{i}].min_severity: must be \"low\", \"medium\" or \"high\""));
        }
        if r.format != "json" && r.format != "slack" {
            return Err(format!("rules[{i}].format: must be \"json\" or \"slack\""));
        }
        if r.webhooks.len() > MAX_WEBHOOKS {
            return Err(format!("rules[{i}].webhooks: at most {MAX_WEBHOOKS}"));
        }
        for (j, url) in r.webhooks.iter().enumerate() {
            let ok = (url.starts_with("http://") || url.starts_with("https://")) && url.len() <= 2048 && reqwest::Url::parse(url).is_ok();
            if !ok {
                return Err(format!("rules[{i}].webhooks[{j}]: must be an http(s) URL"));
            }
        }
        if r.webhooks.is_empty() && !r.log {
            return Err(format!("rules[{i}]: needs webhooks or log = true"));
        }
    }
    Ok(())
}

/// Whether `rule` wants `anomaly` (its `detector` and `severity` fields).
pub fn matches(rule: &AlertRule, anomaly: &serde_json::Value) -> bool {
    let detector_ok = rule.detector == "*" || anomaly["detector"] == rule.detector.as_str();
    let sev = anomaly["severity"].as_str().and_then(Severity::parse);
    detector_ok && sev.zip(Severity::parse(&rule.min_severity)).is_some_and(|(s, min)| s >= min)
}

/// What an alert is about, for its once-per-webhook mark: the session, or for an address's
/// anomaly (no session) the address and the time it fired (once per address and window).
pub fn alert_subject(anomaly: &serde_json::Value) -> String {
    match anomaly["session_id"].as_str() {
        Some(sid) => sid.to_owned(),
        None => format!("{}@{}", anomaly["evidence"]["address"].as_str().unwrap_or_default(), anomaly["timestamp"].as_str().unwrap_or_default()),
    }
}

/// The `X-Sting-Signature` value for `body` at `unix_secs`.
pub fn sign(secret: &[u8], unix_secs: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(unix_secs.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("t={unix_secs},v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// The body sent for `anomaly` in `format`.
pub fn payload(format: &str, anomaly: &serde_json::Value) -> Vec<u8> {
    if format == "slack" {
        let text = format!(
            ":rotating_light: sting-proxy: {} ({}) on session {} of user {} at {}: {}",
            anomaly["detector"].as_str().unwrap_or("?"),
            anomaly["severity"].as_str().unwrap_or("?"),
            anomaly["session_id"].as_str().unwrap_or("none"),
            anomaly["user_id"].as_str().unwrap_or("none"),
            anomaly["timestamp"].as_str().unwrap_or("?"),
            anomaly["evidence"],
        );
        serde_json::to_vec(&serde_json::json!({"text": text})).expect("JSON")
    } else {
        serde_json::to_vec(anomaly).expect("JSON")
    }
}

/// Delivers the alert stream (background service, one consumer per instance).
pub struct AlertDispatcher {
    /// The stream is read on a connection of its own ([`RedisStore::dedicated`]).
    pub store: RedisStore,
    /// `security.webhook_secret`: the HMAC key of the signature (empty: unsigned, warned).
    pub secret: String,
    pub consumer: String,
    pub http: reqwest::Client,
    /// The stream's TTL (the retention), set when this instance creates it.
    pub ttl_secs: u64,
    /// `security.actions`: the detectors whose anomalies revoke the session, and how.
    pub enforce: Option<Enforcement>,
}

/// Automatic revocation on an anomaly (once per anomaly: the consumer group hands each to one
/// instance; a takeover may repeat it, and revoking twice changes nothing).
pub struct Enforcement {
    /// Detectors whose anomalies revoke the session.
    pub revoke: Vec<String>,
    /// Detectors whose anomalies hold the session until it steps up to AAL2.
    pub step_up: Vec<String>,
    pub enforcer: Enforcer,
    pub store: RedisStore,
}

impl AlertDispatcher {
    pub fn new(store: RedisStore, secret: &str, ttl_secs: u64, enforce: Option<Enforcement>) -> reqwest::Result<Self> {
        Ok(Self {
            store,
            secret: secret.to_owned(),
            consumer: uuid::Uuid::new_v4().simple().to_string(),
            http: reqwest::Client::builder().timeout(Duration::from_secs(5)).redirect(reqwest::redirect::Policy::none()).build()?,
            ttl_secs,
            enforce,
        })
    }

    async fn run(&self, shutdown: &mut ShutdownWatch) -> Result<(), StoreError> {
        let mut conn = self.store.dedicated().await?;
        let created: redis::RedisResult<()> =
            redis::cmd("XGROUP").arg("CREATE").arg(keys::alert_stream()).arg(GROUP).arg("0").arg("MKSTREAM").query_async(&mut conn).await;
        match created {
            // A new stream lives the retention; each alert refreshes it (the `DETECT` script).
            // When it expires the group goes with it: reading fails, and the retry recreates both.
            Ok(()) => redis::cmd("EXPIRE").arg(keys::alert_stream()).arg(self.ttl_secs).query_async::<()>(&mut conn).await?,
            Err(e) if e.code() == Some("BUSYGROUP") => {}
            Err(e) => return Err(e.into()),
        }
        loop {
            // Alerts another instance took and never acknowledged (it died), then new ones.
            let claimed: redis::Value = redis::cmd("XAUTOCLAIM")
                .arg(keys::alert_stream())
                .arg(GROUP)
                .arg(&self.consumer)
                .arg(CLAIM_AFTER.as_millis() as u64)
                .arg("0")
                .arg("COUNT")
                .arg(16)
                .query_async(&mut conn)
                .await?;
            let mut entries = entries_of(claimed.as_sequence().and_then(|s| s.get(1)));
            if entries.is_empty() {
                let read: redis::Value = redis::cmd("XREADGROUP")
                    .arg("GROUP")
                    .arg(GROUP)
                    .arg(&self.consumer)
                    .arg("COUNT")
                    .arg(16)
                    .arg("STREAMS")
                    .arg(keys::alert_stream())
                    .arg(">")
                    .query_async(&mut conn)
                    .await?;
                // [[stream, [[id, [field, value]], ...]]]
                entries = entries_of(read.as_sequence().and_then(|s| s.first()).and_then(|s| s.as_sequence()).and_then(|s| s.get(1)));
            }
            if entries.is_empty() {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(200)) => continue,
                    _ = shutdown.changed() => return Ok(()),
                }
            }
            let rules: Vec<AlertRule> = {
                let raw: Option<String> = redis::cmd("GET").arg(keys::alert_rules()).query_async(&mut conn).await?;
                raw.and_then(|r| serde_json::from_str(&r).ok()).unwrap_or_default()
            };
            for (id, anomaly) in entries {
                // An entry that does not parse is acknowledged too: it would never parse later.
                if let Some(anomaly) = anomaly {
                    self.deliver(&rules, &anomaly, &mut conn).await;
                }
                let _: () = redis::cmd("XACK").arg(keys::alert_stream()).arg(GROUP).arg(&id).query_async(&mut conn).await?;
            }
        }
    }

    /// Sends one alert where its rules say; each webhook at most once per (session, detector)
    /// however often the alert is taken over (at-most-once once claimed; a failed send releases
    /// the claim).
    async fn deliver(&self, rules: &[AlertRule], anomaly: &serde_json::Value, conn: &mut StoreConnection) {
        let m = crate::observe::metrics::metrics();
        // An address's anomaly (`session_id` null) has no session to act on.
        if let (Some(e), Some(detector), Some(sid)) = (&self.enforce, anomaly["detector"].as_str(), anomaly["session_id"].as_str()) {
            let sids = [sid.to_owned()];
            if e.revoke.iter().any(|d| d == detector) {
                match e.enforcer.revoke(&e.store, &sids).await {
                    Ok(result) => {
                        tracing::warn!(session_id = sid, detector, "session revoked by its anomaly (security.actions)");
                        let _ = e.enforcer.audit(&e.store, &format!("detector:{detector}"), "revoke_session", sid, &result[0]).await;
                    }
                    Err(err) => tracing::warn!(error = %err, session_id = sid, "could not revoke the session of an anomaly"),
                }
            } else if e.step_up.iter().any(|d| d == detector) {
                match e.enforcer.step_up(&e.store, &sids).await {
                    Ok(()) => {
                        tracing::warn!(session_id = sid, detector, "session held until it steps up to AAL2 (security.actions)");
                        let _ =
                            e.enforcer.audit(&e.store, &format!("detector:{detector}"), "step_up_session", sid, &serde_json::json!({"step_up": true})).await;
                    }
                    Err(err) => tracing::warn!(error = %err, session_id = sid, "could not hold the session of an anomaly for a step-up"),
                }
            }
        }
        for rule in rules.iter().filter(|r| matches(r, anomaly)) {
            if rule.log {
                tracing::warn!(alert = %anomaly, "security alert");
                m.alerts.with_label_values(&["logged"]).inc();
            }
            for url in &rule.webhooks {
                let sent = keys::alert_sent(
                    &alert_subject(anomaly),
                    anomaly["detector"].as_str().unwrap_or_default(),
                    &hex::encode(&<Sha256 as sha2::Digest>::digest(url.as_bytes())[..8]),
                );
                // Claimed before sending, so an instance that takes this alert over while it is
                // being sent skips it; released when sending fails.
                let claimed: Option<String> = redis::cmd("SET").arg(&sent).arg(1).arg("NX").arg("EX").arg(86_400).query_async(conn).await.unwrap_or(None);
                if claimed.is_none() {
                    m.alerts.with_label_values(&["duplicate"]).inc();
                    continue;
                }
                let body = payload(&rule.format, anomaly);
                if self.post(url, &body).await {
                    m.alerts.with_label_values(&["delivered"]).inc();
                } else {
                    m.alerts.with_label_values(&["failed"]).inc();
                    tracing::warn!(url = %url, "alert webhook failed after {ATTEMPTS} attempts");
                    let _: redis::RedisResult<()> = redis::cmd("DEL").arg(&sent).query_async(conn).await;
                }
            }
        }
    }

    /// POSTs `body`, retrying a failure (no answer, 5xx, 429) with exponential backoff.
    async fn post(&self, url: &str, body: &[u8]) -> bool {
        let m = crate::observe::metrics::metrics();
        let mut wait = Duration::from_millis(250);
        for attempt in 1..=ATTEMPTS {
            let now = chrono::Utc::now().timestamp();
            let mut req = self.http.post(url).header("content-type", "application/json").body(body.to_vec());
            if !self.secret.is_empty() {
                req = req.header(SIGNATURE_HEADER, sign(self.secret.as_bytes(), now, body));
            }
            match req.send().await {
                Ok(r) if r.status().is_success() => return true,
                // A 4xx other than 429 will not change on retry.
                Ok(r) if r.status().is_client_error() && r.status() != reqwest::StatusCode::TOO_MANY_REQUESTS => return false,
                _ if attempt < ATTEMPTS => {
                    m.alerts.with_label_values(&["retried"]).inc();
                    tokio::time::sleep(wait).await;
                    wait *= 2;
                }
                _ => {}
            }
        }
        false
    }
}

/// `[[id, [field, value, ...]], ...]` → (id, the `anomaly` field parsed, if it parses).
fn entries_of(v: Option<&redis::Value>) -> Vec<(String, Option<serde_json::Value>)> {
    let Some(list) = v.and_then(|v| v.as_sequence()) else { return Vec::new() };
    list.iter()
        .filter_map(|e| {
            let e = e.as_sequence()?;
            let id: String = redis::from_redis_value(e.first()?).ok()?;
            let fields: Vec<String> = e.get(1).and_then(|f| redis::from_redis_value(f).ok()).unwrap_or_default();
            let anomaly = fields.chunks_exact(2).find(|kv| kv[0] == "anomaly").and_then(|kv| serde_json::from_str(&kv[1]).ok());
            Some((id, anomaly))
        })
        .collect()
}

#[async_trait]
impl BackgroundService for AlertDispatcher {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        loop {
            if let Err(e) = self.run(&mut shutdown).await {
                tracing::warn!(error = %e, "alert dispatcher lost Redis; retrying");
            } else {
                return;
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(detector: &str, min: &str) -> AlertRule {
        AlertRule { detector: detector.into(), min_severity: min.into(), webhooks: vec!["http://127.0.0.1:1/x".into()], log: false, format: "json".into() }
    }

    #[test]
    fn rules_match_by_detector_and_severity() {
        let a = serde_json::json!({"detector": "ua_change", "severity": "medium"});
        assert!(matches(&rule("*", "low"), &a));
        assert!(matches(&rule("ua_change", "medium"), &a));
        assert!(!matches(&rule("ua_change", "high"), &a));
        assert!(!matches(&rule("ip_change", "low"), &a));
    }

    #[test]
    fn bad_rules_are_named() {
        assert!(validate_rules(&[rule("telepathy", "low")]).unwrap_err().contains("rules[0].detector"));
        assert!(validate_rules(&[rule("*", "urgent")]).unwrap_err().contains("min_severity"));
        let mut r = rule("*", "low");
        r.webhooks = vec!["file:///etc/passwd".into()];
        assert!(validate_rules(&[r]).unwrap_err().contains("webhooks[0]"));
        assert!(validate_rules(&[rule("*", "low")]).is_ok());
    }

    #[test]
    fn an_address_alert_is_marked_per_address_and_time() {
        let burst = serde_json::json!({"session_id": null, "detector": "auth_failure_burst", "timestamp": "2026-12-04T10:00:00.000Z", "evidence": {"address": "203.0.113.7"}});
        assert_eq!(alert_subject(&burst), "203.0.113.7@2026-12-04T10:00:00.000Z");
        assert_eq!(alert_subject(&serde_json::json!({"session_id": "s1"})), "s1");
    }

    #[test]
    fn slack_payload_is_a_text_message() {
        let a =
            serde_json::json!({"detector": "ua_change", "severity": "high", "session_id": "s1", "user_id": "u1", "timestamp": "t", "evidence": {"old": "a"}});
        let v: serde_json::Value = serde_json::from_slice(&payload("slack", &a)).unwrap();
        let text = v["text"].as_str().unwrap();
        assert!(text.contains("ua_change (high) on session s1 of user u1"), "{text}");
        assert_eq!(serde_json::from_slice::<serde_json::Value>(&payload("json", &a)).unwrap(), a);
    }

    /// The scheme GitHub and Stripe use: HMAC-SHA256 over "timestamp.body", hex.
    #[test]
    fn signature_is_hmac_sha256_of_timestamp_dot_body() {
        // Python: hmac.new(b"s3cret", b"1700000000.{}", hashlib.sha256).hexdigest()
        assert_eq!(sign(b"s3cret", 1_700_000_000, b"{}"), "t=1700000000,v1=97926816e98fbb41ccb1673225ff29a2f35369099990e1b1561651e7bd097ebf");
    }
}
