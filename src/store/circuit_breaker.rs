//! A consecutive-failure circuit breaker, for calls to Kratos and for the Redis handle's fail
//! fast. No I/O.
//!
//! Closed: calls pass. After `threshold` consecutive failures it opens for `open_for`: calls are
//! refused without trying (misses become anonymous, cached identities keep working). When that
//! time is up, one probe call is let through (half-open); its success closes the circuit, its
//! failure opens it again.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub struct CircuitBreaker {
    threshold: u32,
    open_for: Duration,
    epoch: Instant,
    failures: AtomicU32,
    /// Milliseconds since `epoch` until which the circuit is open; 0 = closed.
    open_until_ms: AtomicU64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CircuitState {
    Closed,
    Open,
    HalfOpen,
}

impl CircuitBreaker {
    pub fn new(threshold: u32, open_for: Duration) -> Self {
        Self { threshold: threshold.max(1), open_for, epoch: Instant::now(), failures: AtomicU32::new(0), open_until_ms: AtomicU64::new(0) }
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// May a call go out now? In half-open state exactly one caller per period gets `true`.
    pub fn allow(&self) -> bool {
        let until = self.open_until_ms.load(Ordering::Acquire);
        if until == 0 {
            return true;
        }
        let now = self.now_ms();
        if now < until {
            return false;
        }
        // Half-open: the caller that moves the deadline forward is the probe.
        let next = now + self.open_for.as_millis() as u64;
        self.open_until_ms.compare_exchange(until, next, Ordering::AcqRel, Ordering::Acquire).is_ok()
    }

    pub fn record_success(&self) {
        self.failures.store(0, Ordering::Release);
        self.open_until_ms.store(0, Ordering::Release);
    }

    /// Opens the circuit now, whatever the count (a failure that alone proves the peer down,
    /// such as a refused connection).
    pub fn trip(&self) {
        self.failures.store(self.threshold, Ordering::Release);
        let until = self.now_ms() + self.open_for.as_millis() as u64;
        self.open_until_ms.store(until.max(1), Ordering::Release);
    }

    pub fn record_failure(&self) {
        let n = self.failures.fetch_add(1, Ordering::AcqRel) + 1;
        if n >= self.threshold {
            let until = self.now_ms() + self.open_for.as_millis() as u64;
            self.open_until_ms.store(until.max(1), Ordering::Release);
        }
    }

    pub fn state(&self) -> CircuitState {
        match self.open_until_ms.load(Ordering::Acquire) {
            0 => CircuitState::Closed,
            until if self.now_ms() < until => CircuitState::Open,
            _ => CircuitState::HalfOpen,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_threshold_and_probes_once() {
        let cb = CircuitBreaker::new(3, Duration::from_millis(50));
        for _ in 0..2 {
            cb.record_failure();
            assert!(cb.allow());
        }
        cb.record_failure();
        assert_eq!(cb.state(), CircuitState::Open);
        assert!(!cb.allow());
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(cb.state(), CircuitState::HalfOpen);
        assert!(cb.allow(), "one probe passes");
        assert!(!cb.allow(), "only one probe per period");
        cb.record_success();
        assert_eq!(cb.state(), CircuitState::Closed);
        assert!(cb.allow());
    }

    #[test]
    fn a_trip_opens_at_once() {
        let cb = CircuitBreaker::new(3, Duration::from_secs(60));
        cb.trip();
        assert_eq!(cb.state(), CircuitState::Open);
        assert!(!cb.allow());
    }

    #[test]
    fn success_resets_the_count() {
        let cb = CircuitBreaker::new(2, Duration::from_secs(60));
        cb.record_failure();
        cb.record_success();
        cb.record_failure();
        assert_eq!(cb.state(), CircuitState::Closed);
    }
}
