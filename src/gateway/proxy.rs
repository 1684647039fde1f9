//! The pingora `ProxyHttp` implementation: each phase does one thing and delegates. I/O.
//!
//! - `request_filter`: client address, request id, identity, authorisation; denials are
//!   answered here and end the request (`Ok(true)`).
//! - `upstream_peer`: the one app, built once at start-up.
//! - `upstream_request_filter`: strip forged identity headers, set ours and `X-Forwarded-*`.
//! - `response_filter`: notice the app issuing or clearing its session cookie (login, logout)
//!   and evict caches.
//! - `logging`: hand one compact event to the analytics writer (`try_send`, never waits).

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use pingora::proxy::{ProxyHttp, Session};

use crate::api::local_response::LocalResponse;
use crate::capture::request_event::{CaptureEvent, RequestEvent, SessionSignal};
use crate::capture::writer::CaptureHandle;
use crate::config::route_template::{self, RouteTemplater};
use crate::config::rules::{self, Decision};
use crate::config::Config;
use crate::gateway::client_ip;
use crate::gateway::own_endpoints::{login_redirect, wants_html, OwnEndpoints};
use crate::gateway::request_ctx::{request_id, RequestCtx};
use crate::identity::authenticate::{Audience, Authenticator};
use crate::identity::cookies::{self, CookieChange};
use crate::identity::headers::{self, Strip, *};
use crate::identity::{AuthOutcome, AuthSource};
use crate::observe::access_log::AccessLogHandle;

/// The sidecar: immutable after start-up, shared by every worker thread.
pub struct Sidecar {
    cfg: Arc<Config>,
    peer: HttpPeer,
    auth: Arc<Authenticator>,
    capture: Option<CaptureHandle>,
    own: OwnEndpoints,
    templater: RouteTemplater,
    access_log: Option<AccessLogHandle>,
}

impl Sidecar {
    pub fn new(
        cfg: Arc<Config>,
        peer: HttpPeer,
        auth: Arc<Authenticator>,
        capture: Option<CaptureHandle>,
        own: OwnEndpoints,
        access_log: Option<AccessLogHandle>,
    ) -> anyhow::Result<Self> {
        let templater = RouteTemplater::new(&cfg.analytics.route_templates).map_err(anyhow::Error::msg)?;
        Ok(Self { cfg, peer, auth, capture, own, templater, access_log })
    }

    /// The answer for a request that may not pass, or `None` to let it through.
    /// `path` is the request's [`routable_path`]; `None` means the target is refused.
    fn denial(&self, req: &RequestHeader, path: Option<&str>, ctx: &RequestCtx, store_down: bool, aal2: Option<&Option<String>>) -> Option<LocalResponse> {
        let Some(path) = path else {
            return Some(LocalResponse::json(
                400,
                serde_json::json!({
                    "error": "bad_request_target",
                    "message": "the request path must be absolute and free of dot segments",
                }),
            ));
        };
        let requirement = rules::requirement_for(&self.cfg.rules, path);
        let role = ctx.identity.as_ref().and_then(|i| i.role.as_deref());
        let browser = wants_html(req);
        match rules::decide(requirement, role, ctx.identity.is_some()) {
            Decision::Allow => None,
            Decision::Unauthenticated => {
                if let Some(redirect) = aal2 {
                    // A Kratos session exists but needs a second factor: not "anonymous".
                    return Some(match (browser, redirect) {
                        (true, Some(to)) => LocalResponse::redirect(to.clone()),
                        _ => LocalResponse::json(
                            403,
                            serde_json::json!({
                                "error": "session_aal2_required",
                                "message": "a second authentication factor is required",
                                "redirect_browser_to": redirect,
                            }),
                        ),
                    });
                }
                if store_down {
                    // Fail closed, and say why: we could not check the session, it may be valid.
                    let mut r = LocalResponse::json(
                        self.cfg.auth.store_down_status,
                        serde_json::json!({
                            "error": "session_store_unavailable",
                            "message": "the session store is unavailable; try again shortly",
                        }),
                    );
                    r.retry_after = Some(5);
                    return Some(r);
                }
                Some(if browser {
                    LocalResponse::redirect(login_redirect(&self.cfg.auth.login_url, &self.cfg.auth.return_to_param, req))
                } else {
                    LocalResponse::json(
                        401,
                        serde_json::json!({
                            "error": "unauthenticated",
                            "message": "a valid session is required",
                            "login_url": self.cfg.auth.login_url,
                        }),
                    )
                })
            }
            Decision::Forbidden => Some(LocalResponse::json(
                403,
                serde_json::json!({
                    "error": "forbidden",
                    "message": "your role does not allow this resource",
                }),
            )),
        }
    }
}

impl Sidecar {
    /// The analytics record of a finished request: only what the proxy already holds.
    fn event(&self, session: &Session, ctx: &mut RequestCtx, status: u16, template: String, latency_us: u64) -> RequestEvent {
        let req = session.req_header();
        let text = |name: &str| req.headers.get(name).and_then(|v| v.to_str().ok()).map(|v| clipped(v, MAX_EVENT_TEXT));
        // The session: the identity's, or a live anonymous Flask session; never a dead sid.
        // A request that made the app issue a session (a login without a prior session)
        // belongs to the session it created.
        let sid = match (&ctx.identity, &ctx.signal) {
            (Some(id), _) => Some(id.session_id.clone()),
            (None, _) if ctx.outcome == AuthOutcome::FlaskAnonymousSession => ctx.flask_sid.clone(),
            (None, SessionSignal::Issued { sid }) => Some(sid.clone()),
            (None, _) => None,
        };
        RequestEvent {
            ts_ms: ctx.started_ms,
            sid,
            identity: ctx.identity.clone(),
            method: req.method.clone(),
            path: clipped(req.uri.path(), MAX_EVENT_TEXT * 4),
            template,
            request_id: ctx.request_id.clone(),
            auth_outcome: ctx.outcome.as_str(),
            failed_credential: ctx.failed_credential,
            status,
            latency_us,
            upstream_latency_us: ctx.upstream_latency_us,
            bytes_in: session.body_bytes_read() as u64,
            bytes_out: session.body_bytes_sent() as u64,
            ip: ctx.client_ip,
            user_agent: text("user-agent"),
            referrer: text("referer"),
            query: req.uri.query().filter(|q| q.contains("utm_")).map(|q| q.chars().take(MAX_EVENT_TEXT).collect()),
            host: if ctx.navigation && req.headers.contains_key("referer") {
                text("host").or_else(|| req.uri.authority().map(|a| a.as_str().to_owned()))
            } else {
                None
            },
            navigation: ctx.navigation,
            gpc: req.headers.get("sec-gpc").is_some_and(|v| v.as_bytes().trim_ascii() == b"1"),
            dnt: req.headers.get("dnt").is_some_and(|v| v.as_bytes().trim_ascii() == b"1"),
            signal: std::mem::replace(&mut ctx.signal, SessionSignal::None),
        }
    }
}

/// Longest User-Agent or Referer kept in an analytics event.
const MAX_EVENT_TEXT: usize = 512;

/// The first `max` characters of `s` (one copy; no walk over the characters when the bytes
/// already fit).
fn clipped(s: &str, max: usize) -> String {
    if s.len() <= max {
        s.to_owned()
    } else {
        s.chars().take(max).collect()
    }
}

/// The path the app will route, from the request target as received. pingora maps a target
/// without a leading `/` (`GET admin/panel`) to the URI `/` but forwards the raw bytes, which
/// Werkzeug routes as `/admin/panel`: such targets are refused, as are dot segments.
fn routable_path(req: &RequestHeader) -> Option<String> {
    let raw = req.raw_path();
    let path = if raw.starts_with(b"/") {
        let raw = std::str::from_utf8(raw).ok()?;
        raw.split('?').next().unwrap_or(raw)
    } else if raw.starts_with(b"http://") || raw.starts_with(b"https://") {
        req.uri.path()
    } else {
        return None;
    };
    rules::route_path(path)
}

#[async_trait]
impl ProxyHttp for Sidecar {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> Self::CTX {
        RequestCtx::new()
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Self::CTX) -> Result<bool> {
        let peer_ip = session.client_addr().and_then(|a| a.as_inet()).map(|a| a.ip());
        let req = session.req_header();
        ctx.request_id = request_id(req);
        ctx.client_ip = peer_ip.map(|ip| {
            let xff = req.headers.get_all(X_FORWARDED_FOR).iter().filter_map(|v| v.to_str().ok());
            client_ip::resolve(ip, xff, &self.cfg.trusted_proxies)
        });

        let header = |n: &str| req.headers.get(n).and_then(|v| v.to_str().ok());
        ctx.navigation = route_template::is_navigation(header("accept"), header("x-requested-with"), header("sec-fetch-mode"));

        // The proxy's own API and dashboard: matched on the path the app would route, so no
        // spelling of them ever reaches the app.
        let path = routable_path(req);
        if let Some(own) = path.as_deref().and_then(|p| self.own.match_path(p)) {
            ctx.own_endpoint = true;
            return self.own.serve(session, ctx, own).await;
        }

        let found = self.auth.identify(req, ctx.client_ip, Audience::App).await;
        ctx.identity = found.identity;
        ctx.flask_sid = found.flask_sid;
        ctx.outcome = found.outcome;
        ctx.refused = found.refused;
        ctx.failed_credential = found.failed_credential;

        match self.denial(session.req_header(), path.as_deref(), ctx, found.store_down, found.aal2_required.as_ref()) {
            None => Ok(false),
            Some(resp) => {
                resp.write(session, &ctx.request_id).await?;
                Ok(true)
            }
        }
    }

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut Self::CTX) -> Result<Box<HttpPeer>> {
        Ok(Box::new(self.peer.clone()))
    }

    async fn upstream_request_filter(&self, session: &mut Session, up: &mut RequestHeader, ctx: &mut Self::CTX) -> Result<()> {
        ctx.upstream_started = Some(Instant::now());
        let peer_ip = session.client_addr().and_then(|a| a.as_inet()).map(|a| a.ip().to_canonical());
        let trusted = peer_ip.is_some_and(|peer| client_ip::is_trusted(peer, &self.cfg.trusted_proxies));
        headers::strip_client_headers(up, if trusted { Strip::IdentityOnly } else { Strip::IdentityAndForwarding });
        // The app must parse the same Cookie text the proxy identified the caller from.
        cookies::join_cookie_headers(up)?;
        // A refused (revoked, or held for a step-up) session's credentials never reach the app: with unsigned cookies or a Kratos
        // without the admin API the app (or Kratos) would still honour them. Fail safe: all of
        // the request's credentials go, so the app sees an anonymous visitor.
        if ctx.refused {
            up.remove_header(&http::header::COOKIE);
            up.remove_header(&http::header::AUTHORIZATION);
            up.remove_header(X_SESSION_TOKEN);
        }
        if let Some(id) = &ctx.identity {
            up.insert_header(X_USER_ID, id.user_id.as_str())?;
            if let Some(e) = &id.email {
                up.insert_header(X_USER_EMAIL, e.as_str())?;
            }
            if let Some(r) = &id.role {
                up.insert_header(X_USER_ROLE, r.as_str())?;
            }
            up.insert_header(X_SESSION_ID, id.session_id.as_str())?;
            up.insert_header(X_AUTH_SOURCE, id.source.as_str())?;
            if let Some(aal) = &id.aal {
                up.insert_header(X_AUTH_AAL, aal.as_str())?;
            }
        }
        up.insert_header(X_REQUEST_ID, ctx.request_id.as_str())?;

        // X-Forwarded-Host: a trusted proxy's, else the Host the client asked for, if well formed.
        if up.headers.get(X_FORWARDED_HOST).is_none() {
            let host = up.headers.get(http::header::HOST).and_then(|v| v.to_str().ok()).filter(|h| headers::valid_host(h)).map(str::to_owned);
            if let Some(h) = host {
                up.insert_header(X_FORWARDED_HOST, h)?;
            }
        }
        // X-Forwarded-For: the client's chain if its sender is trusted, else only what we saw.
        if let Some(peer) = peer_ip {
            let prior = if trusted {
                let parts: Vec<&str> = up.headers.get_all(X_FORWARDED_FOR).iter().filter_map(|v| v.to_str().ok()).collect();
                (!parts.is_empty()).then(|| parts.join(", "))
            } else {
                None
            };
            let mut xff = match prior {
                Some(p) => p + ", ",
                None => String::with_capacity(15),
            };
            crate::observe::printable::push_ip(&mut xff, peer);
            up.insert_header(X_FORWARDED_FOR, xff)?;
            let https = trusted && up.headers.get(X_FORWARDED_PROTO).is_some_and(|v| v.as_bytes() == b"https");
            up.insert_header(X_FORWARDED_PROTO, http::HeaderValue::from_static(if https { "https" } else { "http" }))?;
        }
        Ok(())
    }

    async fn response_filter(&self, session: &mut Session, resp: &mut ResponseHeader, ctx: &mut Self::CTX) -> Result<()> {
        // Logout is the app clearing its cookie: forget the identity now, not after the cache TTL.
        if let Some(t) = ctx.upstream_started {
            ctx.upstream_latency_us = Some(t.elapsed().as_micros() as u64);
        }
        let now = chrono::Utc::now();
        match cookies::change_in_response(resp, &self.cfg.session.cookie_name, now) {
            Some(CookieChange::Cleared) => {
                if let Some(sid) = &ctx.flask_sid {
                    self.auth.sessions().evict(sid);
                    ctx.signal = SessionSignal::Cleared { sid: sid.clone() };
                }
            }
            // Flask-Session re-sends the same cookie on every response; only a new sid is news.
            Some(CookieChange::Set(value)) => {
                if let Ok(sid) = self.auth.sessions().published_sid(&value) {
                    if ctx.flask_sid.as_deref() != Some(sid.as_ref()) {
                        ctx.signal = SessionSignal::Issued { sid: sid.into_owned() };
                    }
                }
            }
            None => {}
        }
        if let Some(kratos) = self.auth.kratos() {
            if let Some(CookieChange::Cleared) = cookies::change_in_response(resp, kratos.cookie_name(), now) {
                if let Some(cred) = self.auth.kratos_credential(session.req_header(), Audience::App) {
                    kratos.forget(cred).await;
                }
                // Kratos's logout flow: the Kratos session this request carried ends here.
                if let Some(id) = ctx.identity.as_ref().filter(|i| i.source == AuthSource::Kratos) {
                    ctx.signal = SessionSignal::Cleared { sid: id.session_id.clone() };
                }
            }
        }
        resp.insert_header(X_REQUEST_ID, ctx.request_id.as_str())?;
        Ok(())
    }

    async fn logging(&self, session: &mut Session, e: Option<&pingora::Error>, ctx: &mut Self::CTX) {
        let status = session.response_written().map(|r| r.status.as_u16()).unwrap_or(0);
        let latency_us = ctx.started.elapsed().as_micros() as u64;
        let template = self.templater.template_for(session.req_header().uri.path(), status);
        crate::observe::metrics::metrics().request(
            &session.req_header().method,
            status,
            &template,
            latency_us as f64 / 1e6,
            ctx.upstream_latency_us.map(|u| u as f64 / 1e6),
            ctx.outcome,
        );
        // The full record (string copies) only when someone takes it.
        let capture = self.capture.as_ref().filter(|_| !ctx.own_endpoint);
        if capture.is_some() || self.access_log.is_some() {
            let event = Arc::new(self.event(session, ctx, status, template, latency_us));
            if let Some(log) = &self.access_log {
                log.record(event.clone());
            }
            if let Some(capture) = capture {
                capture.record(CaptureEvent::Request(event));
            }
        }
        tracing::debug!(
            request_id = %ctx.request_id,
            status,
            auth = ctx.outcome.as_str(),
            latency_us = ctx.started.elapsed().as_micros() as u64,
            error = e.map(|e| e.to_string()),
            "request"
        );
    }
}
