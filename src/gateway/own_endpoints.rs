//! What the proxy answers itself on the public listener, never forwarding it to the app: the
//! analytics REST API (with its Server-Sent Events stream) and the dashboard. Both share one
//! access rule: an admin session or an analytics bearer token, same-origin unless configured.
//! I/O (writes to the downstream session).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::proxy::Session;
use pingora::Result;

use crate::api::analytics::{self, Access, ApiAccess};
use crate::api::changes::Changes;
use crate::api::dashboard::Dashboard;
use crate::api::endpoint::{self, Endpoint};
use crate::api::live_active::LiveFeed;
use crate::api::local_response::LocalResponse;
use crate::config::Config;
use crate::gateway::request_ctx::RequestCtx;
use crate::identity::authenticate::{Audience, Authenticator};
use crate::identity::headers::X_REQUEST_ID;
use crate::store::RedisStore;

/// Longest an event stream stays open; the client reconnects (SSE `retry`) after it.
pub const MAX_STREAM: Duration = Duration::from_secs(600);

/// Event streams open at once per process; more get 503 with `Retry-After`.
pub const MAX_STREAMS: usize = 128;

/// A comment line sent when nothing else was, so dead clients are noticed and idle timeouts
/// of load balancers in between do not cut the stream.
const HEARTBEAT: Duration = Duration::from_secs(15);

/// Longest one write to a stream may take (a client that stops reading is dropped).
const STREAM_WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// Which of the proxy's own pages a path addresses.
#[derive(Debug, PartialEq, Eq)]
pub enum Own {
    /// The path below the API prefix.
    Api(String),
    /// The path below the dashboard prefix.
    Dashboard(String),
    /// The dashboard prefix without its trailing slash: redirect to it.
    DashboardRoot,
}

pub struct OwnEndpoints {
    api_prefix: String,
    dashboard_path: String,
    access: ApiAccess,
    auth: Arc<Authenticator>,
    store: RedisStore,
    dashboard: Dashboard,
    live: Option<LiveFeed>,
    streams: Arc<tokio::sync::Semaphore>,
    login_url: String,
    return_to_param: String,
    changes: Changes,
}

/// The header a browser session must send with a change (revocations): a page on another
/// origin cannot add it without a CORS preflight, which the origin rule refuses.
pub const CSRF_HEADER: &str = "x-sting-csrf";

/// Why access was refused.
enum Denied {
    Origin,
    Unauthenticated,
    Forbidden(&'static str),
}

impl OwnEndpoints {
    pub fn new(cfg: &Config, auth: Arc<Authenticator>, store: RedisStore, live: Option<LiveFeed>) -> Self {
        crate::api::ranges::install_max_range_days(cfg.analytics.max_range_days);
        Self {
            api_prefix: cfg.analytics.api_prefix.clone(),
            dashboard_path: cfg.analytics.dashboard_path.clone(),
            access: ApiAccess::new(&cfg.analytics),
            auth: auth.clone(),
            store: store.clone(),
            dashboard: Dashboard::new(&cfg.analytics.api_prefix),
            live,
            streams: Arc::new(tokio::sync::Semaphore::new(MAX_STREAMS)),
            login_url: cfg.auth.login_url.clone(),
            return_to_param: cfg.auth.return_to_param.clone(),
            changes: Changes::new(cfg, store.clone(), auth.clone()),
        }
    }

    /// Whether `path` (the routable path) is one of ours. Pure.
    pub fn match_path(&self, path: &str) -> Option<Own> {
        let below = |prefix: &str| path.strip_prefix(prefix).map(str::to_owned);
        if let Some(rest) = below(&self.api_prefix).or_else(|| (path == self.api_prefix.trim_end_matches('/')).then(String::new)) {
            return Some(Own::Api(rest));
        }
        if self.dashboard_path.is_empty() {
            return None;
        }
        if let Some(rest) = below(&self.dashboard_path) {
            return Some(Own::Dashboard(rest));
        }
        (path == self.dashboard_path.trim_end_matches('/')).then_some(Own::DashboardRoot)
    }

    /// Answers `own`; always ends the request.
    pub async fn serve(&self, session: &mut Session, ctx: &mut RequestCtx, own: Own) -> Result<bool> {
        let resp = match own {
            Own::DashboardRoot => LocalResponse::redirect(self.dashboard_path.clone()),
            Own::Dashboard(rest) => match self.authorize(session, ctx, Navigation::TopLevelAllowed).await {
                Ok(_) => self.dashboard.serve(&rest),
                Err(Denied::Unauthenticated) if wants_html(session.req_header()) => {
                    LocalResponse::redirect(login_redirect(&self.login_url, &self.return_to_param, session.req_header()))
                }
                Err(d) => denial(d),
            },
            Own::Api(rest) => match self.authorize(session, ctx, Navigation::SameSiteOnly).await {
                Err(d) => denial(d),
                Ok(bearer) => match endpoint::route(session.req_header().method.as_str(), &rest) {
                    Err(e) => e.response(),
                    Ok(Endpoint::ActiveStream) => return self.stream_active(session, &ctx.request_id).await,
                    Ok(ep) if ep.is_change() => {
                        let csrf = session.req_header().headers.get(CSRF_HEADER).is_some_and(|v| !v.is_empty());
                        if !bearer && !csrf {
                            denial(Denied::Forbidden("a change made with a session cookie needs the X-Sting-Csrf header"))
                        } else {
                            match read_body(session).await {
                                Err(r) => r,
                                Ok(body) => {
                                    let actor = match (&ctx.identity, bearer) {
                                        (Some(id), false) => format!("user:{}", id.user_id),
                                        _ => "token".to_owned(),
                                    };
                                    let query = session.req_header().uri.query().map(str::to_owned);
                                    analytics::change(&self.changes, ep, &actor, &body, query.as_deref()).await
                                }
                            }
                        }
                    }
                    Ok(ep) => {
                        let query = session.req_header().uri.query().map(str::to_owned);
                        analytics::serve(&self.store, ep, query.as_deref()).await
                    }
                },
            },
        };
        resp.write(session, &ctx.request_id).await?;
        Ok(true)
    }

    /// Origin, then credentials. A matching bearer token skips identification, so the token
    /// is never sent to Kratos as if it were a Kratos credential. `Ok(true)` when access came
    /// from a bearer token, `Ok(false)` from an admin session.
    async fn authorize(&self, session: &Session, ctx: &mut RequestCtx, nav: Navigation) -> std::result::Result<bool, Denied> {
        let req = session.req_header();
        let header = |n: &str| req.headers.get(n).and_then(|v| v.to_str().ok());
        // `Sec-Fetch-Site: cross-site` marks requests another site's page made (an <img>, a
        // <script>, a no-cors fetch) even when they carry no Origin header. A link followed from
        // another site (a top-level GET navigation to a document) reads nothing back for that
        // site, so the dashboard's pages allow it; the API never does.
        let top_level = nav == Navigation::TopLevelAllowed
            && req.method == http::Method::GET
            && header("sec-fetch-mode") == Some("navigate")
            && header("sec-fetch-dest") == Some("document");
        let cross_site = header("sec-fetch-site") == Some("cross-site") && !top_level;
        if !self.access.origin_allowed(header("origin"), header("host")) || cross_site {
            return Err(Denied::Origin);
        }
        let bearer = self.access.bearer_matches(header("authorization"));
        if !bearer {
            let found = self.auth.identify(req, ctx.client_ip, Audience::OwnEndpoint).await;
            ctx.identity = found.identity;
            ctx.outcome = found.outcome;
        }
        match self.access.check(bearer, ctx.identity.as_deref()) {
            Access::Granted => Ok(bearer),
            Access::Unauthenticated => Err(Denied::Unauthenticated),
            Access::Forbidden(why) => Err(Denied::Forbidden(why)),
        }
    }

    /// `GET {api}/stream/active`: Server-Sent Events, one `active` event per reading (about a
    /// second apart), until the client leaves, [`MAX_STREAM`] passes or the proxy shuts down.
    async fn stream_active(&self, session: &mut Session, request_id: &str) -> Result<bool> {
        let Some(feed) = &self.live else {
            let r = LocalResponse::json(404, serde_json::json!({"error": "not_found", "message": "analytics is disabled"}));
            r.write(session, request_id).await?;
            return Ok(true);
        };
        let Ok(_permit) = self.streams.clone().try_acquire_owned() else {
            let mut r = LocalResponse::json(503, serde_json::json!({"error": "too_many_streams", "message": "too many live streams are open; retry shortly"}));
            r.retry_after = Some(10);
            r.write(session, request_id).await?;
            return Ok(true);
        };
        let mut rx = feed.subscribe();
        let mut h = ResponseHeader::build(200, Some(5))?;
        h.insert_header("content-type", "text/event-stream")?;
        h.insert_header("cache-control", "no-store")?;
        h.insert_header("x-accel-buffering", "no")?;
        h.insert_header(X_REQUEST_ID, request_id)?;
        if session.req_header().version == http::Version::HTTP_11 {
            // Chunks are flushed as written; without this the body would be close-delimited.
            h.insert_header("transfer-encoding", "chunked")?;
        }
        session.set_keepalive(None);
        // A HEAD request has no body to stream: answer the header alone.
        let head = session.req_header().method == http::Method::HEAD;
        session.write_response_header(Box::new(h), head).await?;
        if head {
            return Ok(true);
        }
        let mut out = String::from("retry: 2000\n\n");
        if let Some(r) = *rx.borrow_and_update() {
            out.push_str(&r.sse_event());
        }
        let deadline = tokio::time::Instant::now() + MAX_STREAM;
        loop {
            let chunk = Bytes::from(std::mem::take(&mut out));
            match tokio::time::timeout(STREAM_WRITE_TIMEOUT, session.write_response_body(Some(chunk), false)).await {
                Ok(Ok(())) => {}
                _ => return Ok(true), // the client left or stopped reading
            }
            tokio::select! {
                changed = rx.changed() => match (changed, *rx.borrow_and_update()) {
                    (Err(_), _) => break,
                    (Ok(()), Some(r)) => out = r.sse_event(),
                    (Ok(()), None) => {}
                },
                _ = tokio::time::sleep(HEARTBEAT) => out = ": heartbeat\n\n".into(),
                _ = tokio::time::sleep_until(deadline) => break,
            }
        }
        let _ = session.write_response_body(None, true).await;
        Ok(true)
    }
}

/// Largest request body a change takes (alert rules).
pub const MAX_CHANGE_BODY: usize = 64 * 1024;

/// The request body, whole, up to [`MAX_CHANGE_BODY`] (413 beyond it).
async fn read_body(session: &mut Session) -> std::result::Result<Vec<u8>, LocalResponse> {
    let too_large =
        || LocalResponse::json(413, serde_json::json!({"error": "too_large", "message": format!("the body may be at most {MAX_CHANGE_BODY} bytes")}));
    let mut body = Vec::new();
    loop {
        match session.read_request_body().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > MAX_CHANGE_BODY {
                    return Err(too_large());
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(body),
            Err(_) => return Err(LocalResponse::json(400, serde_json::json!({"error": "bad_body", "message": "the request body could not be read"}))),
        }
    }
}

/// Whether a cross-site top-level navigation (a link from another site) may reach the endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Navigation {
    TopLevelAllowed,
    SameSiteOnly,
}

fn denial(d: Denied) -> LocalResponse {
    match d {
        Denied::Origin => LocalResponse::json(403, serde_json::json!({"error": "forbidden_origin", "message": "cross-origin requests are not allowed"})),
        Denied::Unauthenticated => LocalResponse::json(
            401,
            serde_json::json!({
                "error": "unauthenticated",
                "message": "an admin session or an analytics bearer token is required",
            }),
        ),
        Denied::Forbidden(why) => LocalResponse::json(403, serde_json::json!({"error": "forbidden", "message": why})),
    }
}

/// A browser navigation (it asks for HTML), as opposed to a script.
pub fn wants_html(req: &RequestHeader) -> bool {
    req.headers.get(http::header::ACCEPT).and_then(|v| v.to_str().ok()).is_some_and(|a| a.contains("text/html"))
}

/// `login_url?next=<original path and query>`.
pub fn login_redirect(login_url: &str, return_to_param: &str, req: &RequestHeader) -> String {
    crate::identity::authenticate::with_return_to(login_url, return_to_param, req)
}
