//! A warning that a fault repeats on every request (Redis down, say) is logged once per
//! period, with the count of the ones left out, instead of once per request. No I/O itself.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// At most one log line per `period_ms`; lock-free, shared by every thread.
pub struct LogLimit {
    period_ms: u64,
    next_ms: AtomicU64,
    suppressed: AtomicU64,
}

impl LogLimit {
    pub const fn new(period_ms: u64) -> Self {
        Self { period_ms, next_ms: AtomicU64::new(0), suppressed: AtomicU64::new(0) }
    }

    /// `Some(n)` when this occurrence should be logged, `n` being how many were left out since
    /// the last line; `None` (and counted) otherwise.
    pub fn admit(&self) -> Option<u64> {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
        self.admit_at(now)
    }

    fn admit_at(&self, now_ms: u64) -> Option<u64> {
        let next = self.next_ms.load(Ordering::Relaxed);
        if now_ms >= next && self.next_ms.compare_exchange(next, now_ms + self.period_ms, Ordering::AcqRel, Ordering::Relaxed).is_ok() {
            return Some(self.suppressed.swap(0, Ordering::AcqRel));
        }
        self.suppressed.fetch_add(1, Ordering::Relaxed);
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_period_with_the_count_left_out() {
        let l = LogLimit::new(1000);
        assert_eq!(l.admit_at(5_000), Some(0));
        assert_eq!(l.admit_at(5_001), None);
        assert_eq!(l.admit_at(5_999), None);
        assert_eq!(l.admit_at(6_000), Some(2));
        assert_eq!(l.admit_at(6_500), None);
    }
}
