//! Per-client limits: a token bucket per client address. No I/O.
//!
//! Two uses. Uncached Kratos lookups: every credential the proxy has not seen costs one whoami call, so a flood of random tokens
//! would otherwise turn into a flood on Kratos (and, once Kratos slows down, an open circuit
//! for everyone). Cached credentials never reach this limit; a real user needs a lookup only
//! after logging in. New anonymous session records (the analytics writer): a client that
//! drops its cookie on every request would otherwise add a session record per request. IPv6
//! clients are grouped by /64, the block one host usually holds.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use moka::sync::Cache;

/// Distinct client addresses tracked at once; the least recently seen are forgotten first.
const MAX_TRACKED_CLIENTS: u64 = 100_000;

/// A bucket of `per_minute` tokens, refilled continuously at `per_minute` per minute.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn take(&mut self, per_minute: f64, now: Instant) -> bool {
        let refill = now.saturating_duration_since(self.at).as_secs_f64() * per_minute / 60.0;
        self.tokens = (self.tokens + refill).min(per_minute);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

pub struct ClientLimiter {
    per_minute: f64,
    buckets: Cache<IpAddr, Arc<Mutex<Bucket>>>,
}

impl ClientLimiter {
    /// `per_minute` lookups per client, with a burst of as many; `None` when 0 (no limit).
    pub fn new(per_minute: u32) -> Option<Self> {
        (per_minute > 0).then(|| Self {
            per_minute: f64::from(per_minute),
            // A bucket idle for a minute is full again: forgetting it changes nothing.
            buckets: Cache::builder().max_capacity(MAX_TRACKED_CLIENTS).time_to_idle(Duration::from_secs(60)).build(),
        })
    }

    /// May `client` make one more uncached lookup now? Takes a token if so.
    pub fn allow(&self, client: IpAddr) -> bool {
        self.allow_at(client, Instant::now())
    }

    fn allow_at(&self, client: IpAddr, now: Instant) -> bool {
        let full = Bucket { tokens: self.per_minute, at: now };
        let bucket = self.buckets.get_with(client_block(client), || Arc::new(Mutex::new(full)));
        let mut b = bucket.lock().unwrap_or_else(|e| e.into_inner());
        b.take(self.per_minute, now)
    }
}

/// The address a limit applies to: IPv4 as is, IPv6 by its /64 (IPv4-mapped as IPv4).
fn client_block(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn zero_means_no_limit() {
        assert!(ClientLimiter::new(0).is_none());
    }

    #[test]
    fn a_burst_of_the_rate_then_a_token_per_interval() {
        let l = ClientLimiter::new(6).unwrap();
        let t0 = Instant::now();
        let a = ip("192.0.2.1");
        assert_eq!((0..10).filter(|_| l.allow_at(a, t0)).count(), 6, "the burst is one minute's allowance");
        assert!(!l.allow_at(a, t0 + Duration::from_secs(9)), "6 per minute: one token per 10 s");
        assert!(l.allow_at(a, t0 + Duration::from_secs(10)));
        assert!(!l.allow_at(a, t0 + Duration::from_secs(11)));
        // Idle long enough, the bucket is full again but never holds more than the burst.
        let later = t0 + Duration::from_secs(3600);
        assert_eq!((0..10).filter(|_| l.allow_at(a, later)).count(), 6);
    }

    #[test]
    fn clients_have_separate_buckets() {
        let l = ClientLimiter::new(2).unwrap();
        let t0 = Instant::now();
        assert!(l.allow_at(ip("192.0.2.1"), t0) && l.allow_at(ip("192.0.2.1"), t0));
        assert!(!l.allow_at(ip("192.0.2.1"), t0));
        assert!(l.allow_at(ip("192.0.2.2"), t0), "another client is not limited by the first");
    }

    #[test]
    fn ipv6_hosts_share_their_64_and_mapped_ipv4_is_ipv4() {
        let l = ClientLimiter::new(1).unwrap();
        let t0 = Instant::now();
        assert!(l.allow_at(ip("2001:db8:1:2::1"), t0));
        assert!(!l.allow_at(ip("2001:db8:1:2:ffff::9"), t0), "same /64");
        assert!(l.allow_at(ip("2001:db8:1:3::1"), t0), "another /64");
        assert!(l.allow_at(ip("::ffff:192.0.2.7"), t0));
        assert!(!l.allow_at(ip("192.0.2.7"), t0), "IPv4-mapped and plain IPv4 are one client");
    }
}
