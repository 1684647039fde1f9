//! What the API changes, each written to the audit log: revoking sessions
//! (`DELETE {api}/sessions/{id}`, `POST {api}/users/{id}/revoke`) and the alert rules
//! (`POST {api}/sessions/alerts/configure`), and one user's data: its export
//! (`GET {api}/users/{id}/export`, audited as personal data leaving the store) and erasure
//! (`DELETE {api}/users/{id}`). I/O.
//!
//! A revocation takes the shared steps of [`Enforcer::revoke`] (announce, end as `revoked`,
//! delete the app's key) and then revokes a Kratos session through Kratos's admin API when
//! `kratos.admin_url` is set.

use std::sync::Arc;

use crate::api::endpoint::ApiError;
use crate::api::queries::QueryError;
use crate::api::user_data::{self, Scope};
use crate::capture::alerts::{self, AlertRule};
use crate::capture::enforce::Enforcer;
use crate::config::Config;
use crate::identity::authenticate::Authenticator;
use crate::store::keys;
use crate::store::RedisStore;

/// Who asked for a change, as the audit log names them: `user:{id}` or `token`.
pub type Actor<'a> = &'a str;

pub struct Changes {
    store: RedisStore,
    auth: Arc<Authenticator>,
    enforcer: Enforcer,
    scope: Scope,
    /// `analytics.max_funnels` and `analytics.max_funnel_steps`.
    funnel_limits: (usize, usize),
}

impl Changes {
    pub fn new(cfg: &Config, store: RedisStore, auth: Arc<Authenticator>) -> Self {
        let scope = Scope {
            retention_days: cfg.analytics.retention_days,
            lifetime_secs: cfg.session.lifetime_secs(),
            app_key_prefix: cfg.session.app_key_prefix_of_published().map(str::to_owned),
        };
        Self { store, auth, enforcer: Enforcer::new(cfg), scope, funnel_limits: (cfg.analytics.max_funnels, cfg.analytics.max_funnel_steps) }
    }

    /// Every record about a user, opened (audited: personal data left the store).
    pub async fn export_user(&self, user_id: &str, actor: Actor<'_>) -> Result<serde_json::Value, QueryError> {
        let body = user_data::export(&self.store, user_id, &self.scope).await?;
        let summary = serde_json::json!({"sessions": body["sessions"].as_array().map_or(0, Vec::len)});
        self.audit(actor, "export_user", user_id, &summary).await?;
        Ok(body)
    }

    /// Erases everything about a user (`dry_run`: only counts it). Audited under a pseudonym
    /// (the first 8 bytes of the id's SHA-256), so the audit log keeps no trace of the id.
    pub async fn erase_user(&self, user_id: &str, dry_run: bool, actor: Actor<'_>) -> Result<serde_json::Value, QueryError> {
        let report = user_data::erase(&self.store, user_id, &self.scope, dry_run).await?;
        let body = serde_json::json!(report);
        if !dry_run {
            let pseudonym = hex::encode(&<sha2::Sha256 as sha2::Digest>::digest(user_id.as_bytes())[..8]);
            let mut summary = body.clone();
            summary["user_id"] = serde_json::json!(format!("sha256:{pseudonym}"));
            self.audit(actor, "erase_user", &format!("sha256:{pseudonym}"), &summary).await?;
        }
        Ok(body)
    }

    /// Revokes one session. 404 when neither analytics nor the app knows it.
    pub async fn revoke_session(&self, sid: &str, actor: Actor<'_>) -> Result<serde_json::Value, QueryError> {
        let source: Option<String> = self.store.query(redis::cmd("HGET").arg(keys::analytics_session(sid)).arg("auth_source")).await?;
        let app_key: bool = match self.enforcer.app_key_prefix() {
            Some(prefix) => self.store.query(redis::cmd("EXISTS").arg(keys::flask_session(prefix, sid))).await?,
            None => false,
        };
        if source.is_none() && !app_key {
            return Err(QueryError::NotFound("no such session"));
        }
        let mut results = self.revoke(&[sid.to_owned()]).await?;
        let mut body = results.remove(0);
        if source.as_deref() == Some("kratos") {
            let answer = match self.auth.kratos() {
                Some(k) => k.revoke_session(sid).await,
                None => None,
            };
            body["kratos"] = kratos_result(answer);
        }
        self.audit(actor, "revoke_session", sid, &body).await?;
        Ok(body)
    }

    /// Revokes every session of a user that may still be live (and, with `kratos.admin_url`, every Kratos
    /// session of the identity of that id).
    pub async fn revoke_user(&self, user_id: &str, actor: Actor<'_>) -> Result<serde_json::Value, QueryError> {
        // Active ones, and any started within the session lifetime: an idle-ended session
        // left the active set but its cookie may still be live.
        let since = chrono::Utc::now().timestamp_millis() - self.enforcer.session_lifetime_secs() as i64 * 1000;
        let (active, recent): (Vec<String>, Vec<String>) =
            self.store.pipeline(redis::pipe().smembers(keys::active_user(user_id)).zrangebyscore(keys::user_sessions(user_id), since, "+inf")).await?;
        let mut sids: Vec<String> = active.into_iter().chain(recent).collect();
        sids.sort();
        sids.dedup();
        let sessions = if sids.is_empty() { Vec::new() } else { self.revoke(&sids).await? };
        let kratos = kratos_result(match self.auth.kratos() {
            Some(k) => k.revoke_identity_sessions(user_id).await,
            None => None,
        });
        let body = serde_json::json!({"user_id": user_id, "revoked": sessions.len(), "sessions": sessions, "kratos": kratos});
        self.audit(actor, "revoke_user", user_id, &body).await?;
        Ok(body)
    }

    /// Steps 1-3 for `sids` (see [`Enforcer::revoke`]); this instance refuses them at once.
    async fn revoke(&self, sids: &[String]) -> Result<Vec<serde_json::Value>, QueryError> {
        for sid in sids {
            self.auth.revocations().insert(sid);
        }
        Ok(self.enforcer.revoke(&self.store, sids).await?)
    }

    /// Replaces the alert rules with `body` (a JSON array of [`AlertRule`]s), after checking it.
    pub async fn configure_alerts(&self, body: &[u8], actor: Actor<'_>) -> Result<serde_json::Value, QueryError> {
        let rules: Vec<AlertRule> = serde_json::from_slice(body).map_err(|e| bad_rules(format!("not a JSON array of rules: {e}")))?;
        alerts::validate_rules(&rules).map_err(bad_rules)?;
        let json = serde_json::to_string(&rules).expect("rules serialize");
        self.store.query::<()>(redis::cmd("SET").arg(keys::alert_rules()).arg(&json)).await?;
        let body = serde_json::json!({"rules": rules});
        self.audit(actor, "configure_alerts", "alert_rules", &body).await?;
        Ok(body)
    }

    /// Defines a funnel from `body` (`{"name": ..., "steps": [...]}`). A name already defined
    /// (in the config or through the API) is refused, so a funnel's counts always mean one
    /// definition; so is one past `analytics.max_funnels`.
    pub async fn define_funnel(&self, body: &[u8], actor: Actor<'_>) -> Result<serde_json::Value, QueryError> {
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Definition {
            name: String,
            steps: Vec<String>,
        }
        let bad = |parameter: &'static str, message: String| QueryError::Api(ApiError::BadParameter { parameter, message });
        let d: Definition = serde_json::from_slice(body).map_err(|e| bad("funnel", format!("not a JSON object {{\"name\", \"steps\"}}: {e}")))?;
        let (max_funnels, max_steps) = self.funnel_limits;
        crate::config::funnel::check(&d.name, &d.steps, max_steps)
            .map_err(|m| bad(if crate::config::funnel::valid_name(&d.name) { "steps" } else { "name" }, m))?;
        let json = crate::config::funnel::definition_json(&d.steps);
        // Checked and written atomically, so two instances cannot pass the limit together.
        let added: i64 = self
            .store
            .query(
                redis::cmd("EVAL")
                    .arg("if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then return -1 end if redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[3]) then return -2 end redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) return 1")
                    .arg(1)
                    .arg(keys::funnels())
                    .arg(&d.name)
                    .arg(&json)
                    .arg(max_funnels),
            )
            .await?;
        match added {
            -1 => return Err(bad("name", format!("a funnel named {:?} is already defined", d.name))),
            -2 => return Err(bad("name", format!("at most {max_funnels} funnels (analytics.max_funnels)"))),
            _ => {}
        }
        let body = serde_json::json!({"name": d.name, "steps": d.steps, "version": crate::config::funnel::version(&json)});
        self.audit(actor, "define_funnel", &d.name, &body).await?;
        Ok(body)
    }

    async fn audit(&self, actor: Actor<'_>, action: &str, target: &str, result: &serde_json::Value) -> Result<(), QueryError> {
        Ok(self.enforcer.audit(&self.store, actor, action, target, result).await?)
    }
}

fn bad_rules(message: String) -> QueryError {
    QueryError::Api(ApiError::BadParameter { parameter: "rules", message })
}

/// What Kratos's admin API said, for the answer: `revoked`, `unknown` (Kratos did not know it),
/// `not_configured`, or `error: ...`.
fn kratos_result(r: Option<Result<bool, String>>) -> serde_json::Value {
    serde_json::json!(match r {
        None => "not_configured".to_owned(),
        Some(Ok(true)) => "revoked".to_owned(),
        Some(Ok(false)) => "unknown".to_owned(),
        Some(Err(e)) => format!("error: {e}"),
    })
}
