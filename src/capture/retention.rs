//! Who was active on which day, compactly, for retention cohorts: every user gets a dense index
//! ([`keys::user_index()`]) the first time they are recorded, which marks them in that day's
//! new-users bitmap; every day they are active sets their bit in the day's active-users bitmap.
//! One bit per user per day per bitmap: about 2 × 365 / 8 ≈ 92 bytes per user per year, plus one
//! index field (the user id and a number). One script call per batch ([`RETAIN`]). Pure (the
//! command builder); the writer sends it.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::OnceLock;

use crate::capture::session_scripts::script_sha;
use crate::store::keys::{self, Period, PeriodSlot};

/// KEYS: 1 the user index hash, 2 its next-index counter.
/// ARGV: 1 ttl s, 2 n, then n triples (user id, the day's new-users bitmap, the day's
///       active-users bitmap), oldest day first.
/// Returns the number of users indexed for the first time.
pub const RETAIN: &str = r#"
local ttl, n = ARGV[1], tonumber(ARGV[2])
local new, refresh = 0, false
for i = 0, n - 1 do
  local b = 3 + i * 3
  local idx = redis.call('HGET', KEYS[1], ARGV[b])
  if not idx then
    idx = redis.call('INCR', KEYS[2])
    redis.call('HSET', KEYS[1], ARGV[b], idx)
    redis.call('SETBIT', ARGV[b + 1], idx, 1)
    redis.call('EXPIRE', ARGV[b + 1], ttl)
    new = new + 1
  end
  if redis.call('SETBIT', ARGV[b + 2], idx, 1) == 0 then
    -- The user's first activity of the day: the day's bitmap and the index live on.
    redis.call('EXPIRE', ARGV[b + 2], ttl)
    refresh = true
  end
end
-- The index lives as long as there is activity within the retention: without any, every
-- bitmap is gone too.
if refresh then
  redis.call('EXPIRE', KEYS[1], ttl)
  redis.call('EXPIRE', KEYS[2], ttl)
end
return new
"#;

/// The SHA-1 Redis knows [`RETAIN`] by.
pub fn retain_sha() -> &'static str {
    static SHA: OnceLock<String> = OnceLock::new();
    SHA.get_or_init(|| script_sha(RETAIN))
}

/// The batch's retention command from its distinct users per period (the daily ones are
/// used); `None` when the batch saw no user.
pub fn retain_cmd(users: &BTreeMap<PeriodSlot, BTreeSet<String>>, ttl_secs: u64) -> Option<redis::Cmd> {
    let days: Vec<(&PeriodSlot, &BTreeSet<String>)> = users.iter().filter(|(p, u)| p.period == Period::Day && !u.is_empty()).collect();
    if days.is_empty() {
        return None;
    }
    let mut c = redis::cmd("EVALSHA");
    c.arg(retain_sha()).arg(2).arg(keys::user_index()).arg(keys::user_index_next()).arg(ttl_secs).arg(days.iter().map(|(_, u)| u.len()).sum::<usize>());
    for (day, users) in days {
        let label = day.label();
        let (new, active) = (keys::new_users_bitmap(&label), keys::active_users_bitmap(&label));
        for u in users {
            c.arg(u).arg(&new).arg(&active);
        }
    }
    Some(c)
}

/// The users this process already recorded as active today, so a busy user costs the
/// retention script once per day, not once per batch. Bounded: emptied when full (a forgotten
/// user costs one more script call, never a wrong count).
#[derive(Debug, Default)]
pub struct KnownUsers {
    day: i64,
    users: HashSet<String>,
}

/// Users remembered per day by [`KnownUsers`].
pub const KNOWN_USERS_MAX: usize = 100_000;

impl KnownUsers {
    /// The daily users of `users` not yet recorded today (by this process), now remembered.
    pub fn unrecorded(&mut self, users: &BTreeMap<PeriodSlot, BTreeSet<String>>) -> BTreeMap<PeriodSlot, BTreeSet<String>> {
        let mut out: BTreeMap<PeriodSlot, BTreeSet<String>> = BTreeMap::new();
        for (slot, day_users) in users.iter().filter(|(p, _)| p.period == Period::Day) {
            if slot.index > self.day {
                self.day = slot.index;
                self.users.clear();
            }
            for u in day_users {
                // An earlier day (a late batch) is always written: it is rare and not remembered.
                if slot.index == self.day && self.users.contains(u) {
                    continue;
                }
                if slot.index == self.day {
                    if self.users.len() >= KNOWN_USERS_MAX {
                        self.users.clear();
                    }
                    self.users.insert(u.clone());
                }
                out.entry(*slot).or_default().insert(u.clone());
            }
        }
        out
    }
}

/// Bits set in `a AND b` (bitmaps as Redis stores them; the shorter is padded with zeros).
pub fn and_count(a: &[u8], b: &[u8]) -> u64 {
    a.iter().zip(b).map(|(x, y)| u64::from((x & y).count_ones())).sum()
}

/// `acc |= b`, growing `acc` as needed.
pub fn or_into(acc: &mut Vec<u8>, b: &[u8]) {
    if acc.len() < b.len() {
        acc.resize(b.len(), 0);
    }
    for (x, y) in acc.iter_mut().zip(b) {
        *x |= y;
    }
}

/// Bits set.
pub fn count(a: &[u8]) -> u64 {
    a.iter().map(|x| u64::from(x.count_ones())).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bitmap_arithmetic() {
        let mut acc = vec![0b1000_0000];
        or_into(&mut acc, &[0b0000_0001, 0b1000_0000]);
        assert_eq!(acc, vec![0b1000_0001, 0b1000_0000]);
        assert_eq!(count(&acc), 3);
        assert_eq!(and_count(&acc, &[0b1111_1111]), 2);
    }

    #[test]
    fn a_user_is_written_once_per_day_per_process() {
        let mut known = KnownUsers::default();
        let day = Period::Day.slot(1_796_043_900_000);
        let batch = |users: &[&str]| BTreeMap::from([(day, users.iter().map(|u| u.to_string()).collect::<BTreeSet<_>>())]);
        assert_eq!(known.unrecorded(&batch(&["u1", "u2"]))[&day].len(), 2);
        assert_eq!(known.unrecorded(&batch(&["u1", "u3"]))[&day], BTreeSet::from(["u3".to_owned()]));
        assert!(known.unrecorded(&batch(&["u1"])).is_empty());
        let next = Period::Day.slot(1_796_043_900_000 + 86_400_000);
        assert_eq!(known.unrecorded(&BTreeMap::from([(next, BTreeSet::from(["u1".to_owned()]))]))[&next].len(), 1, "a new day");
    }

    #[test]
    fn one_call_per_batch_with_users() {
        let mut users = BTreeMap::new();
        let day = Period::Day.slot(1_796_043_900_000);
        users.entry(day).or_insert_with(BTreeSet::new).extend(["u1".to_owned(), "u2".to_owned()]);
        users.entry(Period::Hour.slot(1_796_043_900_000)).or_insert_with(BTreeSet::new).insert("u1".to_owned());
        let c = retain_cmd(&users, 60).unwrap();
        let packed = String::from_utf8_lossy(&c.get_packed_command()).into_owned();
        assert_eq!(packed.matches("sting:analytics:daily:2026-11-30:active_users").count(), 2);
        assert!(retain_cmd(&BTreeMap::new(), 60).is_none());
    }
}
