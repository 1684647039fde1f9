//! The compact record of one proxied request, handed from the `logging` phase to the analytics
//! writer. Pure data; no I/O.
//!
//! It is built once per request from what the proxy already holds; everything costly
//! (templating, UA parsing, geo lookup, aggregation) happens later, off the request path.

use std::net::IpAddr;
use std::sync::Arc;

use crate::identity::Identity;

/// What the app's response did to its session cookie; how logins and logouts are seen without
/// parsing bodies.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum SessionSignal {
    #[default]
    None,
    /// The app issued a session cookie for a sid other than the one the request carried.
    Issued { sid: String },
    /// A session cookie was cleared (logout): the app's (this Flask sid) or Kratos's (this
    /// Kratos session id). Named, because a request can carry both kinds of session.
    Cleared { sid: String },
}

/// Why a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    Logout,
    /// The app's session key expired or was deleted.
    Expired,
    /// No activity for `analytics.idle_timeout_seconds`.
    Idle,
    /// Revoked through the API (`DELETE /api/analytics/sessions/{id}`).
    Revoked,
}

impl EndReason {
    pub fn as_str(self) -> &'static str {
        match self {
            EndReason::Logout => "logout",
            EndReason::Expired => "expired",
            EndReason::Idle => "idle",
            EndReason::Revoked => "revoked",
        }
    }
}

/// `Default` is an empty `GET` with no session, for tests and benches to fill in.
#[derive(Debug, Clone, Default)]
pub struct RequestEvent {
    /// Unix time in milliseconds when the request arrived.
    pub ts_ms: i64,
    /// The session the request belongs to: a Flask sid (with or without a user) or a Kratos
    /// session id. Never a cookie value.
    pub sid: Option<String>,
    pub identity: Option<Arc<Identity>>,
    pub method: http::Method,
    /// The raw path.
    pub path: String,
    /// Its route template (computed once, for the metrics label, the access log and analytics).
    pub template: String,
    pub request_id: String,
    /// How the caller was identified (`AuthOutcome::as_str`).
    pub auth_outcome: &'static str,
    /// An invalid credential's short fingerprint (never the credential), for
    /// `auth_failure_burst`.
    pub failed_credential: Option<[u8; 8]>,
    pub status: u16,
    pub latency_us: u64,
    pub upstream_latency_us: Option<u64>,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// The one place client addresses enter analytics (privacy hooks go here).
    pub ip: Option<IpAddr>,
    /// The one place User-Agents enter analytics.
    pub user_agent: Option<String>,
    pub referrer: Option<String>,
    /// The query string, kept only when it carries `utm_` parameters (acquisition).
    pub query: Option<String>,
    /// The request's `Host`, kept only for a navigation with a referrer (to tell a same-site
    /// referrer from an external one).
    pub host: Option<String>,
    /// The request looked like a browser navigation (Accept, X-Requested-With, Sec-Fetch-Mode).
    pub navigation: bool,
    /// `Sec-GPC: 1` (Global Privacy Control) and `DNT: 1` (Do Not Track) as sent.
    pub gpc: bool,
    pub dnt: bool,
    pub signal: SessionSignal,
}

/// Everything the writer receives: requests, and session ends found by the expiry listener or
/// the sweep.
#[derive(Debug, Clone)]
pub enum CaptureEvent {
    /// Shared with the access log, which reads the same record (no copy per request).
    Request(Arc<RequestEvent>),
    SessionEnded {
        sid: String,
        ts_ms: i64,
        reason: EndReason,
    },
}
