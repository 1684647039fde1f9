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
        _ => new_request_id(),
    }
}

/// A new request id: 32 hex digits, the first 16 a random number drawn once per thread, the
/// last 16 that thread's request counter. Unique like a v4 UUID for this purpose (two threads
/// share a prefix with probability 2^-64), and no random draw or allocation beyond the string.
fn new_request_id() -> String {
    use std::cell::Cell;
    thread_local! {
        static PREFIX: u64 = u64::from_le_bytes(uuid::Uuid::new_v4().as_bytes()[..8].try_into().unwrap_or_default());
        static COUNTER: Cell<u64> = const { Cell::new(0) };
    }
    let n = COUNTER.with(|c| {
        let n = c.get().wrapping_add(1);
        c.set(n);
        n
    });
    let prefix = PREFIX.with(|p| *p);
    let mut id = String::with_capacity(32);
    push_hex(&mut id, prefix);
    push_hex(&mut id, n);
    id
}

fn push_hex(out: &mut String, v: u64) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for shift in (0..16).rev() {
        out.push(HEX[((v >> (shift * 4)) & 15) as usize] as char);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn made_ids_are_32_hex_digits_and_never_repeat() {
        let ids: Vec<String> = (0..1000).map(|_| new_request_id()).collect();
        assert!(ids.iter().all(|id| id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())), "{:?}", &ids[..3]);
        let distinct: std::collections::HashSet<&String> = ids.iter().collect();
        assert_eq!(distinct.len(), ids.len());
        // Another thread draws its own prefix.
        let other = std::thread::spawn(new_request_id).join().unwrap();
        assert_ne!(other[..16], ids[0][..16]);
        assert_eq!(ids[0][..16], ids[999][..16]);
    }
}
