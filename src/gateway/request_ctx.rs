//! The state one request carries through the pingora phases, and its request id. Pure data.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use pingora::http::RequestHeader;

use crate::capture::request_event::SessionSignal;
use crate::identity::headers::X_REQUEST_ID;
use crate::identity::{AuthOutcome, Identity};

/// Per-request state, created by pingora for every request.
pub struct RequestCtx {
    pub started: Instant,
    /// Unix ms at arrival, for analytics.
    pub started_ms: i64,
    pub upstream_started: Option<Instant>,
    pub upstream_latency_us: Option<u64>,
    /// The request looked like a browser navigation.
    pub navigation: bool,
    pub signal: SessionSignal,
    /// Answered by the proxy's own API: not app traffic, so not recorded in analytics.
    pub own_endpoint: bool,
    pub request_id: String,
    pub client_ip: Option<IpAddr>,
    pub identity: Option<Arc<Identity>>,
    pub flask_sid: Option<String>,
    pub outcome: AuthOutcome,
    /// The request carried a refused session's credential (revoked, or awaiting a step-up): it
    /// is not forwarded to the app.
    pub refused: bool,
    /// The short fingerprint of an invalid credential the request carried, for analytics.
    pub failed_credential: Option<[u8; 8]>,
}

impl RequestCtx {
    /// A request's state at arrival.
    pub fn new() -> Self {
        RequestCtx {
            started: Instant::now(),
            started_ms: chrono::Utc::now().timestamp_millis(),
            upstream_started: None,
            upstream_latency_us: None,
            navigation: false,
            signal: SessionSignal::None,
            own_endpoint: false,
            request_id: String::new(),
            client_ip: None,
            identity: None,
            flask_sid: None,
            outcome: AuthOutcome::Anonymous,
            refused: false,
            failed_credential: None,
        }
    }
}

impl Default for RequestCtx {
    fn default() -> Self {
        Self::new()
    }
}

/// A request id from the client is kept when it is short and plain; otherwise we make one.
pub fn request_id(req: &RequestHeader) -> String {
    match req.headers.get(X_REQUEST_ID).map(|v| v.as_bytes()) {
        Some(v) if !v.is_empty() && v.len() <= 128 && v.iter().all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(b)) => {
            String::from_utf8_lossy(v).into_owned()
        }
        _ => uuid::Uuid::new_v4().simple().to_string(),
    }
}
