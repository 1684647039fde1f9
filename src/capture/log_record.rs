//! What the access log (in `observe`, which imports nothing of ours) takes from the capture
//! layer: a request's line, borrowed from its shared [`RequestEvent`], and the enrichment of its client
//! with this layer's User-Agent parser and GeoIP reader. Pure, apart from a bounded cache.

use std::collections::HashMap;
use std::net::IpAddr;

use crate::capture::device::{self, Device};
use crate::capture::geo::GeoDb;
use crate::capture::privacy::Privacy;
use crate::capture::request_event::RequestEvent;
use crate::observe::access_log::{ClientTraits, Enrich, LogSource, Record};

/// Distinct User-Agents whose parse the access log keeps; the cache is emptied beyond it.
const MAX_CACHED_AGENTS: usize = 10_000;

/// A parsed User-Agent as log lines show it, shared by reference count with every line.
struct Agent {
    browser: std::sync::Arc<str>,
    os: std::sync::Arc<str>,
    kind: &'static str,
}

impl From<Device> for Agent {
    fn from(d: Device) -> Self {
        Agent { browser: d.browser.into(), os: d.os.into(), kind: d.kind.as_str() }
    }
}

impl LogSource for RequestEvent {
    /// The access log's view of this request (nothing copied).
    fn log_record(&self) -> Record<'_> {
        Record {
            ts_ms: self.ts_ms,
            request_id: &self.request_id,
            ip: self.ip,
            method: self.method.as_str(),
            path: &self.path,
            route: &self.template,
            status: self.status,
            bytes_out: self.bytes_out,
            bytes_in: self.bytes_in,
            latency_us: self.latency_us,
            upstream_latency_us: self.upstream_latency_us,
            user_id: self.identity.as_ref().map(|i| i.user_id.as_str()),
            session_id: self.sid.as_deref(),
            auth: self.auth_outcome,
            user_agent: self.user_agent.as_deref(),
            referrer: self.referrer.as_deref(),
        }
    }
}

/// The access log's enrichment: browser, OS and device class from the User-Agent (parsed once
/// per distinct agent), country from the address when a GeoIP database is configured.
/// The address as `privacy.log_ip_mode` shows it.
pub fn log_enricher(geo: Option<GeoDb>, privacy: std::sync::Arc<Privacy>) -> Enrich {
    let mut devices: HashMap<String, Agent> = HashMap::new();
    Box::new(move |ua: Option<&str>, ip: Option<IpAddr>| {
        if devices.len() > MAX_CACHED_AGENTS {
            devices.clear();
        }
        let shown = |a: &Agent| (Some(a.browser.clone()), Some(a.os.clone()), Some(a.kind));
        let (ua_family, os, device) = match ua {
            None => (None, None, None),
            Some(ua) => match devices.get(ua) {
                Some(a) => shown(a),
                None => {
                    let a = Agent::from(device::parse(ua));
                    let traits = shown(&a);
                    devices.insert(ua.to_owned(), a);
                    traits
                }
            },
        };
        ClientTraits {
            client: ip.and_then(|ip| privacy.shown_ip(privacy.log_ip_mode, ip, chrono::Utc::now().timestamp_millis())),
            ua_family,
            os,
            device,
            country: match (&geo, ip) {
                (Some(g), Some(ip)) => g.lookup(ip).country,
                _ => None,
            },
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enrich_parses_the_agent_and_skips_absent_fields() {
        let mut enrich = log_enricher(None, std::sync::Arc::new(Privacy::plain()));
        let t = enrich(Some("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36"), None);
        assert_eq!(t.device, Some("desktop"));
        assert!(t.ua_family.as_deref().is_some_and(|f| f.contains("Chrome")), "{t:?}");
        assert_eq!(t.country, None);
        assert_eq!(enrich(None, None), ClientTraits::default());
        assert_eq!(enrich(None, Some("81.2.69.7".parse().unwrap())).client.as_deref(), Some("81.2.69.7"));
    }

    #[test]
    fn the_log_shows_the_address_as_configured() {
        let mut p = Privacy::plain();
        p.log_ip_mode = crate::config::privacy::IpMode::Truncated;
        let mut enrich = log_enricher(None, std::sync::Arc::new(p));
        assert_eq!(enrich(None, Some("81.2.69.7".parse().unwrap())).client.as_deref(), Some("81.2.69.0"));
    }
}
