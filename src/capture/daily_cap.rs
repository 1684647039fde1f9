//! The first N distinct names of a UTC day, for Redis structures keyed by what clients choose
//! (bot names, page templates): later new names are counted under a catch-all instead, so a
//! client cycling names cannot grow a day's sorted set without bound. Per process: with k
//! instances a day holds at most k × N names plus the catch-all. Pure; no I/O.

use std::collections::HashSet;

use crate::store::keys::Period;

#[derive(Debug)]
pub struct DailyCap {
    cap: usize,
    day: i64,
    admitted: HashSet<String>,
}

impl DailyCap {
    pub fn new(cap: usize) -> Self {
        Self { cap, day: 0, admitted: HashSet::new() }
    }

    /// Moves to the UTC day of `ts_ms` if it is later than the current one; returns true then
    /// (names refused on an earlier day may now be admitted).
    pub fn roll(&mut self, ts_ms: i64) -> bool {
        let day = Period::Day.slot(ts_ms).index;
        if day <= self.day {
            return false;
        }
        self.day = day;
        self.admitted.clear();
        true
    }

    /// Whether `name` is one of the day's admitted names (admitting it if there is room).
    pub fn admit(&mut self, name: &str) -> bool {
        if self.admitted.contains(name) {
            return true;
        }
        if self.admitted.len() >= self.cap {
            return false;
        }
        self.admitted.insert(name.to_owned());
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admits_the_first_n_names_of_each_day() {
        let mut c = DailyCap::new(2);
        let day1 = 1_796_043_900_000;
        assert!(c.roll(day1));
        assert!(c.admit("a") && c.admit("b") && c.admit("a"));
        assert!(!c.admit("c"));
        assert!(!c.roll(day1 + 1000), "same day");
        assert!(c.roll(day1 + 86_400_000));
        assert!(c.admit("c"));
    }
}
