//! The admin listener: `/healthz` (the process is alive), `/readyz` (Redis answers and the
//! revoked sessions are loaded) and
//! `/metrics` (Prometheus text, see [`crate::observe::metrics`]). I/O.
//!
//! It runs as its own pingora service on `server.admin_listen`, so health checks never queue
//! behind proxied traffic and are not exposed on the public port.

use async_trait::async_trait;
use http::Response;
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;

use std::sync::Arc;

use crate::identity::revocation::Revocations;
use crate::store::RedisStore;

pub struct AdminApp {
    store: RedisStore,
    revocations: Arc<Revocations>,
}

impl AdminApp {
    pub fn new(store: RedisStore, revocations: Arc<Revocations>) -> Self {
        Self { store, revocations }
    }
}

fn reply(status: u16, body: serde_json::Value) -> Response<Vec<u8>> {
    let body = body.to_string().into_bytes();
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .header("content-length", body.len())
        .header("cache-control", "no-store")
        .body(body)
        .expect("static response parts are valid")
}

#[async_trait]
impl ServeHttp for AdminApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        match session.req_header().uri.path() {
            "/healthz" => reply(200, serde_json::json!({"status": "ok", "version": env!("CARGO_PKG_VERSION")})),
            "/readyz" => match self.store.ping().await {
                // Not ready to refuse revoked sessions yet: keep traffic away a moment longer.
                Ok(()) if !self.revocations.loaded() => reply(503, serde_json::json!({"status": "not ready", "reason": "revoked sessions not loaded yet"})),
                Ok(()) => reply(200, serde_json::json!({"status": "ready", "redis": "ok"})),
                Err(e) => {
                    tracing::warn!(error = %e, "readiness: Redis unavailable");
                    reply(503, serde_json::json!({"status": "not ready", "reason": "redis unavailable"}))
                }
            },
            "/metrics" => {
                let m = crate::observe::metrics::metrics();
                // The gauge is read at scrape time: one SCARD per scrape, none per request.
                if let Ok(n) = self.store.query::<i64>(redis::cmd("SCARD").arg(crate::store::keys::active_sessions())).await {
                    m.active_sessions.set(n);
                }
                let body = m.render();
                Response::builder()
                    .status(200)
                    .header("content-type", "text/plain; version=0.0.4; charset=utf-8")
                    .header("content-length", body.len())
                    .header("cache-control", "no-store")
                    .body(body)
                    .expect("static response parts are valid")
            }
            _ => reply(404, serde_json::json!({"error": "not found", "endpoints": ["/healthz", "/readyz", "/metrics"]})),
        }
    }
}
