//! Per-user behaviour aggregates: what a signed-in user's requests of one batch add to their
//! usual hours, routes, devices and countries, summed in memory and written by one script call
//! per user per batch. Pure (sums and the command builder); the writer sends it.
//!
//! Every request with a user counts once in each aggregate (requests, not page views or
//! sessions), unless it asked not to be tracked (GPC/DNT, as configured): its UTC weekday and hour, its route template, its device
//! (`{browser}|{os}|{type}`, `unknown|unknown|other` without a User-Agent) and its country
//! (`unknown` without a GeoIP answer). The sorted sets are capped per user
//! ([`keys::USER_ROUTES_CAP`], ...): a member they no longer admit counts under
//! [`keys::OTHER`], decided atomically by [`BEHAVIOR`], so several instances agree.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use crate::capture::session_scripts::script_sha;
use crate::store::keys;

const DAY_MS: i64 = 86_400_000;
const HOUR_MS: i64 = 3_600_000;

/// The UTC weekday (0 = Monday) and hour of a unix time in ms, without building a date.
pub fn weekday_hour(ts_ms: i64) -> (u8, u8) {
    // 1970-01-01 was a Thursday (3 days after a Monday).
    let day = ts_ms.div_euclid(DAY_MS);
    ((day + 3).rem_euclid(7) as u8, (ts_ms.rem_euclid(DAY_MS) / HOUR_MS) as u8)
}

/// One user's requests in one batch, summed.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct UserSums {
    pub first_ts_ms: i64,
    pub last_ts_ms: i64,
    /// (weekday, hour) → requests
    pub hours: BTreeMap<(u8, u8), i64>,
    pub routes: BTreeMap<String, i64>,
    /// `{browser}|{os}|{type}` → requests; a short list compared part by part, so a repeat
    /// costs no allocation.
    pub devices: Vec<(String, i64)>,
    pub countries: BTreeMap<String, i64>,
}

/// `map[key] += 1`; the owned key is made only when it is new.
fn bump(map: &mut BTreeMap<String, i64>, key: &str) {
    match map.get_mut(key) {
        Some(n) => *n += 1,
        None => {
            map.insert(key.to_owned(), 1);
        }
    }
}

impl UserSums {
    /// Counts one request of the user.
    pub fn add(&mut self, ts_ms: i64, route: &str, device: [&str; 3], country: &str) {
        if self.hours.is_empty() {
            (self.first_ts_ms, self.last_ts_ms) = (ts_ms, ts_ms);
        }
        self.first_ts_ms = self.first_ts_ms.min(ts_ms);
        self.last_ts_ms = self.last_ts_ms.max(ts_ms);
        *self.hours.entry(weekday_hour(ts_ms)).or_default() += 1;
        bump(&mut self.routes, route);
        bump(&mut self.countries, country);
        match self.devices.iter_mut().find(|(k, _)| crate::capture::device::is_joined(k, "|", device)) {
            Some((_, n)) => *n += 1,
            None => self.devices.push((device.join("|"), 1)),
        }
    }
}

/// Adds one user's sums to their aggregates, atomically, capping each sorted set.
///
/// KEYS: 1 activity hash, 2 routes zset, 3 devices zset, 4 countries zset.
/// ARGV: 1 ttl s, 2 first ts ms, 3 last ts ms, 4 the overflow member (`other`), 5 n, then n
/// pairs (`{weekday}:{hour}`, requests); then for each of the three sorted sets: its cap, m,
/// then m pairs (member, requests).
pub const BEHAVIOR: &str = r#"
local ttl, other = ARGV[1], ARGV[4]
local h = KEYS[1]
local seen = redis.call('HMGET', h, 'first_seen', 'last_seen')
local set = {}
if not seen[1] or tonumber(seen[1]) > tonumber(ARGV[2]) then set[#set + 1] = 'first_seen'; set[#set + 1] = ARGV[2] end
if not seen[2] or tonumber(seen[2]) < tonumber(ARGV[3]) then set[#set + 1] = 'last_seen'; set[#set + 1] = ARGV[3] end
if #set > 0 then redis.call('HSET', h, unpack(set)) end
local i = 6
for _ = 1, tonumber(ARGV[5]) do
  redis.call('HINCRBY', h, ARGV[i], ARGV[i + 1])
  i = i + 2
end
redis.call('EXPIRE', h, ttl)
for k = 2, 4 do
  local cap, m = tonumber(ARGV[i]), tonumber(ARGV[i + 1])
  i = i + 2
  if m > 0 then
    -- The named members are counted only when a new one comes; an empty set needs no lookups
    -- (a call's members are distinct).
    local named, empty = nil, false
    for _ = 1, m do
      local member = ARGV[i]
      if member ~= other and (empty or not redis.call('ZSCORE', KEYS[k], member)) then
        if named == nil then
          named = redis.call('ZCARD', KEYS[k])
          if named == 0 then
            empty = true
          elseif redis.call('ZSCORE', KEYS[k], other) then
            named = named - 1
          end
        end
        if named >= cap then member = other else named = named + 1 end
      end
      redis.call('ZINCRBY', KEYS[k], ARGV[i + 1], member)
      i = i + 2
    end
    redis.call('EXPIRE', KEYS[k], ttl)
  end
end
return 1
"#;

/// The SHA-1 Redis knows [`BEHAVIOR`] by.
pub fn behavior_sha() -> &'static str {
    static SHA: OnceLock<String> = OnceLock::new();
    SHA.get_or_init(|| script_sha(BEHAVIOR))
}

/// The `EVALSHA` of [`BEHAVIOR`] for one user's sums (load the script first in the pipeline).
pub fn behavior_cmd(user_id: &str, sums: &UserSums, ttl_secs: u64) -> redis::Cmd {
    let mut c = redis::cmd("EVALSHA");
    c.arg(behavior_sha())
        .arg(4)
        .arg(keys::user_activity(user_id))
        .arg(keys::user_routes(user_id))
        .arg(keys::user_devices(user_id))
        .arg(keys::user_countries(user_id))
        .arg(ttl_secs)
        .arg(sums.first_ts_ms)
        .arg(sums.last_ts_ms)
        .arg(keys::OTHER)
        .arg(sums.hours.len());
    for ((weekday, hour), n) in &sums.hours {
        c.arg(format!("{weekday}:{hour}")).arg(*n);
    }
    c.arg(keys::USER_ROUTES_CAP).arg(sums.routes.len());
    for (m, n) in &sums.routes {
        c.arg(m).arg(*n);
    }
    c.arg(keys::USER_DEVICES_CAP).arg(sums.devices.len());
    for (m, n) in &sums.devices {
        c.arg(m).arg(*n);
    }
    c.arg(keys::USER_COUNTRIES_CAP).arg(sums.countries.len());
    for (m, n) in &sums.countries {
        c.arg(m).arg(*n);
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weekday_and_hour_are_utc() {
        // 2026-11-30T13:05:00Z is a Monday.
        assert_eq!(weekday_hour(1_796_043_900_000), (0, 13));
        // 1970-01-01T00:00Z was a Thursday; one ms before, Wednesday 23:00.
        assert_eq!(weekday_hour(0), (3, 0));
        assert_eq!(weekday_hour(-1), (2, 23));
        // 2026-12-06T23:59:59.999Z is a Sunday.
        assert_eq!(weekday_hour(1_796_601_599_999), (6, 23));
    }

    #[test]
    fn sums_count_each_request_once_per_aggregate() {
        let mut s = UserSums::default();
        let t = 1_796_043_900_000;
        s.add(t + 5, "/a", ["Chrome", "Linux", "desktop"], "GB");
        s.add(t, "/a", ["Chrome", "Linux", "desktop"], "GB");
        s.add(t + 3_600_000, "/b", ["Firefox", "Linux", "desktop"], "unknown");
        assert_eq!((s.first_ts_ms, s.last_ts_ms), (t, t + 3_600_000));
        assert_eq!(s.hours, BTreeMap::from([((0, 13), 2), ((0, 14), 1)]));
        assert_eq!(s.routes, BTreeMap::from([("/a".to_owned(), 2), ("/b".to_owned(), 1)]));
        assert_eq!(s.devices, vec![("Chrome|Linux|desktop".to_owned(), 2), ("Firefox|Linux|desktop".to_owned(), 1)]);
        assert_eq!(s.countries.values().sum::<i64>(), 3);
        let is_device_key = |k: &str, parts| crate::capture::device::is_joined(k, "|", parts);
        assert!(is_device_key("a|b|c", ["a", "b", "c"]) && !is_device_key("a|b|cd", ["a", "b", "c"]) && !is_device_key("ab|c", ["a", "b", "c"]));
        let cmd = String::from_utf8_lossy(&behavior_cmd("u1", &s, 60).get_packed_command()).into_owned();
        for part in ["sting:analytics:user:u1:activity", "sting:analytics:user:u1:routes", "\r\n0:13\r\n", "Firefox|Linux|desktop", behavior_sha()] {
            assert!(cmd.contains(part), "{part} missing from {cmd}");
        }
    }
}
