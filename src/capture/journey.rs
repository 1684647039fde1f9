//! Per session, per batch: where the session came from (acquisition) and how far it got
//! through each funnel, decided atomically in one small Lua script ([`JOURNEY`]) so that two
//! proxy instances never both count a session's landing or a funnel step. Pure (command
//! builders); the writer sends them.
//!
//! The session's state is one small hash ([`keys::session_journey`]): whether its first page
//! view was counted, that page view's source (to credit the user who signs in later), the first
//! user, and per funnel the number of steps reached in order.

use std::sync::OnceLock;

use crate::capture::acquisition::Source;
use crate::capture::session_scripts::script_sha;
use crate::store::keys::{self, Period, PeriodSlot};

/// Most goals one session passes to the script per batch (consecutive repeats are merged
/// first); later ones in the same batch are not matched against funnels.
pub const MAX_GOALS_PER_BATCH: usize = 256;

/// KEYS: 1 the session's journey hash, 2 the funnel definitions hash, 3 the session's record
///       (as the `TOUCH` before it in the same transaction left it).
/// ARGV: 1 the journey hash's ttl s, 2 the counters' ttl s, 3 user id or '', 4 '1' to count
///       every landing given (`acquisition_all_navigations`) instead of the session's first
///       page view only, 5 '1' to keep the source for a user who signs in later ('0' for a
///       request that asked not to be tracked), 6 the batch's page views of the session,
///       7 n = landings, then n groups of 16: the day and hour users sets, the 4 values
///       (referrer, source, medium, campaign; '' = absent), the daily and hourly analytics
///       hashes, the 4 daily and the 4 hourly dimension zsets.
///       Then G = 8 + 16n: m = goals, then m pairs (funnel key prefix of the goal's day, goal);
///       then the funnel key prefix of the day a user first seen now is credited on.
/// Returns {landings counted, funnel steps counted, user attached 0/1}.
///
/// A one-request session kept as a light record (see `session_scripts::TOUCH`) gets no journey
/// hash unless it reaches a funnel step: its landing is counted, and when a later batch
/// promotes it, its record's page views (more than that batch's) show its first page view was
/// earlier, so the landing is not counted again. Its source is then not kept for a sign-in.
pub const JOURNEY: &str = r#"
local h, defs_key = KEYS[1], KEYS[2]
local jttl, ttl, user = ARGV[1], ARGV[2], ARGV[3]
local all_navs, keep = ARGV[4] == '1', ARGV[5] == '1'
local n = tonumber(ARGV[7])
local dims = {'referrers', 'utm_source', 'utm_medium', 'utm_campaign'}
local counted, steps_counted, attached, touched = 0, 0, 0, false
local full, landed = false, true
if n > 0 then
  full = redis.call('EXISTS', KEYS[3]) == 1
  landed = redis.call('HEXISTS', h, 'l') == 1
end
if not landed and full and tonumber(redis.call('HGET', KEYS[3], 'page_views') or '0') > tonumber(ARGV[6]) then
  -- Page views before this batch (a light record's): its landing was counted then.
  landed = true
  redis.call('HSET', h, 'l', '1')
  touched = true
end
-- New members of shared keys set the key's TTL (a new key has only new members); the period
-- hashes are expired by the batch's pipeline already.
local function credit(users_key, vals, who)
  for d = 1, 4 do
    if vals[d] ~= '' and redis.call('SADD', users_key, dims[d] .. '\n' .. vals[d] .. '\n' .. who) == 1 then
      redis.call('EXPIRE', users_key, ttl)
    end
  end
end
for i = 0, n - 1 do
  local b = 8 + i * 16
  local first = not landed
  if first then
    landed = true
    if full then
      redis.call('HSET', h, 'l', '1')
      touched = true
    end
  end
  if first or all_navs then
    counted = counted + 1
    local vals = {ARGV[b + 2], ARGV[b + 3], ARGV[b + 4], ARGV[b + 5]}
    for p = 0, 1 do
      redis.call('HINCRBY', ARGV[b + 6 + p], 'landings', 1)
      for d = 1, 4 do
        if vals[d] ~= '' then
          local z = ARGV[b + 7 + p * 4 + d]
          if tonumber(redis.call('ZINCRBY', z, 1, vals[d])) == 1 then redis.call('EXPIRE', z, ttl) end
        end
      end
      if user ~= '' then credit(ARGV[b + p], vals, user) end
    end
    if first and keep and full then
      redis.call('HSET', h, 'a', table.concat({ARGV[b], ARGV[b + 1], vals[1], vals[2], vals[3], vals[4]}, '\t'))
    end
  end
end
local G = 8 + n * 16
local m = tonumber(ARGV[G])
local attach_prefix = ARGV[G + 1 + 2 * m]
if user ~= '' and (touched or redis.call('EXISTS', h) == 1) and redis.call('HSETNX', h, 'u', user) == 1 then
  attached, touched = 1, true
  local a = redis.call('HGET', h, 'a')
  if a then
    local parts = {}
    for part in string.gmatch(a .. '\t', '([^\t]*)\t') do parts[#parts + 1] = part end
    if #parts == 6 then
      local vals = {parts[3], parts[4], parts[5], parts[6]}
      credit(parts[1], vals, user)
      credit(parts[2], vals, user)
    end
  end
end
if m > 0 or attached == 1 then
  local defs = redis.call('HGETALL', defs_key)
  for k = 1, #defs, 2 do
    local name, json = defs[k], defs[k + 1]
    local ok, steps = pcall(cjson.decode, json)
    if ok and type(steps) == 'table' then
      local version = string.sub(redis.sha1hex(json), 1, 8)
      local field = 'f:' .. name .. ':' .. version
      local idx = tonumber(redis.call('HGET', h, field) or '0')
      local was = idx
      if attached == 1 and idx > 0 then
        -- The user signs in after the steps they reached: they reached them too.
        local users = attach_prefix .. name .. ':' .. version .. ':users'
        for s = 1, idx do redis.call('SADD', users, s .. '\n' .. user) end
        redis.call('EXPIRE', users, ttl)
      end
      for j = 0, m - 1 do
        local g = G + 1 + j * 2
        if idx < #steps and ARGV[g + 1] == steps[idx + 1] then
          idx = idx + 1
          local key = ARGV[g] .. name .. ':' .. version
          if redis.call('HINCRBY', key, idx, 1) == 1 then redis.call('EXPIRE', key, ttl) end
          if user ~= '' and redis.call('SADD', key .. ':users', idx .. '\n' .. user) == 1 then
            redis.call('EXPIRE', key .. ':users', ttl)
          end
          steps_counted = steps_counted + 1
        end
      end
      if idx > was then
        redis.call('HSET', h, field, idx)
        touched = true
      end
    end
  end
end
if touched then redis.call('EXPIRE', h, jttl) end
return {counted, steps_counted, attached}
"#;

/// The sessions this process already gave a landing candidate: any later page view of theirs
/// is not their first, so the writer does not ask the script again. Bounded: emptied when full
/// (a forgotten session is asked once more, and the script still counts it once).
#[derive(Debug, Default)]
pub struct Landed {
    sids: std::collections::HashSet<String>,
}

/// Sessions remembered by [`Landed`].
pub const LANDED_MAX: usize = 100_000;

impl Landed {
    /// Whether a page view of `sid` may be its landing (`all_navigations`: every one counts).
    pub fn candidate(&mut self, sid: &str, all_navigations: bool) -> bool {
        if all_navigations {
            return true;
        }
        if self.sids.contains(sid) {
            return false;
        }
        if self.sids.len() >= LANDED_MAX {
            self.sids.clear();
        }
        self.sids.insert(sid.to_owned());
        true
    }
}

/// The SHA-1 Redis knows [`JOURNEY`] by.
pub fn journey_sha() -> &'static str {
    static SHA: OnceLock<String> = OnceLock::new();
    SHA.get_or_init(|| script_sha(JOURNEY))
}

/// What one session's batch brings to its journey.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct SessionJourney {
    /// Landing candidates, in time order: (time, source).
    pub landings: Vec<(i64, Source)>,
    /// Whether the source may be kept for a user who signs in later (no tracking opt-out).
    pub keep_source: bool,
}

/// The journey command of one session's batch. `goals`: (time, goal) in time order (route
/// templates of page views, action names). `journey_ttl_secs`: how long the session's state
/// lives (as its record); `ttl_secs`: the counters'.
#[allow(clippy::too_many_arguments)]
pub fn journey_cmd(
    keys_of: &mut PeriodKeys,
    sid: &str,
    user: Option<&str>,
    page_views: i64,
    j: &SessionJourney,
    goals: &[(i64, &str)],
    journey_ttl_secs: u64,
    ttl_secs: u64,
    all_navigations: bool,
) -> redis::Cmd {
    let mut c = redis::cmd("EVALSHA");
    c.arg(journey_sha())
        .arg(3)
        .arg(keys::session_journey(sid))
        .arg(keys::funnels())
        .arg(keys::analytics_session(sid))
        .arg(journey_ttl_secs)
        .arg(ttl_secs)
        .arg(user.unwrap_or(""))
        .arg(if all_navigations { "1" } else { "0" })
        .arg(if j.keep_source { "1" } else { "0" })
        .arg(page_views)
        .arg(j.landings.len());
    for (ts, source) in &j.landings {
        let k = keys_of.landing(*ts);
        c.arg(&k[0]).arg(&k[1]);
        for v in source.values() {
            c.arg(v);
        }
        for key in &k[2..] {
            c.arg(key);
        }
    }
    let mut merged: Vec<(PeriodSlot, &str)> = Vec::new();
    for (ts, goal) in goals {
        let day = Period::Day.slot(*ts);
        if merged.last().is_some_and(|(_, g)| g == goal) {
            continue;
        }
        if merged.len() == MAX_GOALS_PER_BATCH {
            break;
        }
        merged.push((day, goal));
    }
    c.arg(merged.len());
    for (day, goal) in &merged {
        c.arg(keys_of.funnel_prefix(*day)).arg(*goal);
    }
    let attach_day = goals.last().map(|(ts, _)| *ts).or(j.landings.last().map(|(ts, _)| *ts)).unwrap_or_default();
    c.arg(keys_of.funnel_prefix(Period::Day.slot(attach_day)));
    c
}

/// The period keys a batch's journey calls name, each made once per batch (a batch covers a
/// few days and hours, and its sessions all name the same keys).
#[derive(Debug, Default)]
pub struct PeriodKeys {
    landing: std::collections::HashMap<(i64, i64), [String; 12]>,
    funnel: std::collections::HashMap<i64, String>,
}

impl PeriodKeys {
    /// A landing at `ts_ms`: the day's and hour's users sets, the daily and hourly analytics
    /// hashes, then the 4 daily and the 4 hourly dimension sets (as [`JOURNEY`] takes them).
    fn landing(&mut self, ts_ms: i64) -> &[String; 12] {
        let (day, hour) = (Period::Day.slot(ts_ms), Period::Hour.slot(ts_ms));
        self.landing.entry((day.index, hour.index)).or_insert_with(|| {
            let (d, h) = (day.label(), hour.label());
            let [a, b, c, e] = keys::ACQUISITION_DIMENSIONS;
            [
                keys::acquisition_users(Period::Day, &d),
                keys::acquisition_users(Period::Hour, &h),
                keys::analytics_period(Period::Day, &d),
                keys::analytics_period(Period::Hour, &h),
                keys::acquisition(Period::Day, &d, a),
                keys::acquisition(Period::Day, &d, b),
                keys::acquisition(Period::Day, &d, c),
                keys::acquisition(Period::Day, &d, e),
                keys::acquisition(Period::Hour, &h, a),
                keys::acquisition(Period::Hour, &h, b),
                keys::acquisition(Period::Hour, &h, c),
                keys::acquisition(Period::Hour, &h, e),
            ]
        })
    }

    fn funnel_prefix(&mut self, day: PeriodSlot) -> &str {
        self.funnel.entry(day.index).or_insert_with(|| keys::funnel_day_prefix(&day.label()))
    }
}

/// Writes the configured funnels into the definitions hash (a configured name replaces what the
/// API may have stored under it). The command for the writer to send at start; `None` if none.
pub fn publish_cmd(funnels: &[crate::config::FunnelSection]) -> Option<redis::Cmd> {
    if funnels.is_empty() {
        return None;
    }
    let mut c = redis::cmd("HSET");
    c.arg(keys::funnels());
    for f in funnels {
        c.arg(&f.name).arg(crate::config::funnel::definition_json(&f.steps));
    }
    Some(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn goals_are_merged_and_bounded() {
        let goals: Vec<(i64, &str)> = vec![(1_796_043_900_000, "/a"), (1_796_043_900_001, "/a"), (1_796_043_900_002, "/b")];
        let c = journey_cmd(&mut PeriodKeys::default(), "s1", Some("u1"), 1, &SessionJourney::default(), &goals, 60, 60, false);
        let packed = String::from_utf8_lossy(&c.get_packed_command()).into_owned();
        assert_eq!(packed.matches("sting:analytics:daily:2026-11-30:funnel:").count(), 3, "two goals and the attach day: {packed}");
        assert!(packed.contains(journey_sha()));
        let many: Vec<(i64, String)> = (0..1000).map(|i| (1_796_043_900_000 + i, format!("/p{i}"))).collect();
        let many: Vec<(i64, &str)> = many.iter().map(|(t, g)| (*t, g.as_str())).collect();
        let c = journey_cmd(&mut PeriodKeys::default(), "s1", None, 1, &SessionJourney::default(), &many, 60, 60, false);
        assert_eq!(c.args_iter().count(), 13 + 1 + 2 * MAX_GOALS_PER_BATCH + 1, "EVALSHA, sha, 3 keys and their count, 7 fixed arguments, the goals");
    }
}
