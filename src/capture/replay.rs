//! The analytics writer's recent batches, kept a few seconds after Redis acknowledged them so
//! that a failover cannot lose them. Pure (no I/O): the writer sends what it returns.
//!
//! Redis replicates asynchronously: a master that acknowledged a batch may fail (or be demoted
//! by `SENTINEL FAILOVER`, and then resync from its replica) before the replica had it. Each
//! batch sets the writer's key to its number in the same transaction, and a replica holds a
//! prefix of its master's writes, so after a failover the number the new master holds says
//! exactly which batches it lacks: those after it, sent again in order.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// How long an acknowledged batch is kept: longer than a failover takes to be noticed
/// (Sentinel's announcement, or the writer's next failed call) plus replication lag.
pub const REPLAY_WINDOW: Duration = Duration::from_secs(5);

/// At most this many batches are kept, whatever their age.
pub const REPLAY_MAX_BATCHES: usize = 1_024;

/// Batches acknowledged in the last [`REPLAY_WINDOW`], oldest first.
pub struct ReplayLog {
    window: Duration,
    batches: VecDeque<(u64, Instant, redis::Pipeline)>,
}

impl ReplayLog {
    /// A log keeping batches for `window`; `Duration::ZERO` keeps none (one Redis without
    /// failover has nothing to replay).
    pub fn new(window: Duration) -> Self {
        Self { window, batches: VecDeque::new() }
    }

    /// Keeps batch `seq` (acknowledged at `now`), dropping what is older than the window.
    pub fn acknowledged(&mut self, seq: u64, pipe: redis::Pipeline, now: Instant) {
        if self.window.is_zero() {
            return;
        }
        while self.batches.front().is_some_and(|(_, at, _)| now.duration_since(*at) > self.window) || self.batches.len() >= REPLAY_MAX_BATCHES {
            self.batches.pop_front();
        }
        self.batches.push_back((seq, now, pipe));
    }

    /// The kept batches after `landed` (the number the master holds), oldest first.
    pub fn after(&self, landed: u64) -> Vec<(u64, redis::Pipeline)> {
        self.batches.iter().filter(|(seq, _, _)| *seq > landed).map(|(seq, _, p)| (*seq, p.clone())).collect()
    }

    pub fn is_empty(&self) -> bool {
        self.batches.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pipe(n: u64) -> redis::Pipeline {
        let mut p = redis::pipe();
        p.set("k", n);
        p
    }

    #[test]
    fn keeps_the_window_and_answers_what_came_after() {
        let t0 = Instant::now();
        let mut log = ReplayLog::new(Duration::from_secs(5));
        for seq in 1..=4 {
            log.acknowledged(seq, pipe(seq), t0 + Duration::from_secs(seq));
        }
        assert_eq!(log.after(2).iter().map(|(s, _)| *s).collect::<Vec<_>>(), [3, 4]);
        assert!(log.after(4).is_empty());
        // Batch 1 (t0+1 s) is older than 5 s when batch 7 comes at t0+7 s.
        log.acknowledged(7, pipe(7), t0 + Duration::from_secs(7));
        assert_eq!(log.after(0).iter().map(|(s, _)| *s).collect::<Vec<_>>(), [2, 3, 4, 7]);
        let mut none = ReplayLog::new(Duration::ZERO);
        none.acknowledged(1, pipe(1), t0);
        assert!(none.is_empty());
    }

    #[test]
    fn holds_at_most_the_cap() {
        let t0 = Instant::now();
        let mut log = ReplayLog::new(Duration::from_secs(60));
        for seq in 1..=(REPLAY_MAX_BATCHES as u64 + 10) {
            log.acknowledged(seq, pipe(seq), t0);
        }
        let kept = log.after(0);
        assert_eq!(kept.len(), REPLAY_MAX_BATCHES);
        assert_eq!(kept[0].0, 11);
    }
}
