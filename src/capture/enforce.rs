//! Stopping a session: the revocation steps shared by the API, the CLI and the alert
//! dispatcher's automatic enforcement (`security.actions`), and the audit log they all write.
//! I/O (Redis).
//!
//! In this order: the revocation is recorded and announced (every instance refuses the session
//! from its next request on); the session ends in analytics with reason `revoked` (once); the
//! app's Flask-Session key is deleted (signed cookies), after the end so that the key-deletion
//! notification finds the session already ended instead of ending it as a logout.

use std::time::Duration;

use crate::capture::request_event::EndReason;
use crate::capture::session_scripts;
use crate::config::Config;
use crate::identity::revocation;
use crate::store::keys;
use crate::store::{RedisStore, StoreError};

/// What revoking needs to know about the deployment.
#[derive(Debug, Clone)]
pub struct Enforcer {
    /// The app's key prefix when published sids are the real ones (signed cookies).
    app_key_prefix: Option<String>,
    ttl_secs: u64,
    anonymous_ttl_secs: u64,
    idle_timeout_ms: u64,
    keep: Duration,
}

impl Enforcer {
    pub fn new(cfg: &Config) -> Self {
        Self {
            app_key_prefix: cfg.session.app_key_prefix_of_published().map(str::to_owned),
            ttl_secs: cfg.analytics.retention_days * 86_400,
            anonymous_ttl_secs: cfg.session.lifetime_secs(),
            idle_timeout_ms: cfg.analytics.idle_timeout_seconds * 1000,
            keep: cfg.revocation_keep(),
        }
    }

    /// The app's session lifetime: how long a session's cookie may stay valid.
    pub fn session_lifetime_secs(&self) -> u64 {
        self.anonymous_ttl_secs
    }

    /// The app's key prefix, when sids name app keys.
    pub fn app_key_prefix(&self) -> Option<&str> {
        self.app_key_prefix.as_deref()
    }

    /// Revokes `sids` everywhere; one answer per sid: `{"session_id", "revoked": true,
    /// "ended", "app_session_deleted"}`.
    pub async fn revoke(&self, store: &RedisStore, sids: &[String]) -> Result<Vec<serde_json::Value>, StoreError> {
        revocation::publish(store, sids, self.keep).await?;
        let now = chrono::Utc::now().timestamp_millis();
        let mut pipe = redis::pipe();
        session_scripts::load_scripts(&mut pipe);
        for sid in sids {
            pipe.add_command(session_scripts::end_for(sid, now, EndReason::Revoked, self.idle_timeout_ms, self.ttl_secs, self.anonymous_ttl_secs));
        }
        let durations: Vec<i64> = store.pipeline(&pipe).await?;
        let deleted: Vec<i64> = match &self.app_key_prefix {
            Some(prefix) => {
                let dels: Vec<redis::Cmd> = sids.iter().map(|sid| redis::cmd("DEL").arg(keys::flask_session(prefix, sid)).clone()).collect();
                store.query_each(&dels, store.command_timeout()).await?
            }
            None => vec![0; sids.len()],
        };
        Ok(sids
            .iter()
            .zip(durations.iter().zip(&deleted))
            .map(|(sid, (d, del))| serde_json::json!({"session_id": sid, "revoked": true, "ended": *d >= 0, "app_session_deleted": *del > 0}))
            .collect())
    }

    /// Holds `sids` on every instance until each authenticates again at AAL2 through Kratos
    /// (`security.actions` = `step_up`); their sessions go on, unlike a revocation.
    pub async fn step_up(&self, store: &RedisStore, sids: &[String]) -> Result<(), StoreError> {
        revocation::publish_step_up(store, sids, self.keep).await
    }

    /// Appends to the audit log: who (`user:{id}`, `token`, `cli`, `detector:{name}`) did what.
    pub async fn audit(&self, store: &RedisStore, actor: &str, action: &str, target: &str, result: &serde_json::Value) -> Result<(), StoreError> {
        let entry = serde_json::json!({
            "timestamp": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "actor": actor, "action": action, "target": target, "result": result,
        });
        let mut pipe = redis::pipe();
        pipe.lpush(keys::audit_log(), entry.to_string())
            .ignore()
            .ltrim(keys::audit_log(), 0, keys::AUDIT_LOG_CAP as isize - 1)
            .ignore()
            .expire(keys::audit_log(), self.ttl_secs as i64)
            .ignore();
        store.pipeline::<()>(&pipe).await
    }
}
