//! The two Lua scripts that keep per-session analytics exact when several proxy instances
//! share one Redis. Pure (command builders); the writer sends them.
//!
//! Counters that only add (page views, hits, breakdowns) are plain `HINCRBY`/`ZINCRBY` and are
//! exact by themselves. What needs a decision — "is this the first sight of the session?",
//! "is this the first time we learn its user?", "has it already ended?" — must be decided and
//! acted on atomically, or two instances both count a start.
//!
//! Each call is an `EVALSHA`, and every pipeline that uses a script starts with its
//! `SCRIPT LOAD` ([`load_scripts`]): the script text travels once per batch instead of once per
//! session (3 KB each), and because the load runs before its uses in the same `MULTI`/pipeline,
//! a restarted Redis (empty script cache) can never answer `NOSCRIPT` halfway through a batch.

use std::sync::OnceLock;

use sha1::{Digest, Sha1};

use crate::capture::privacy::Privacy;
use crate::capture::request_event::EndReason;
use crate::store::keys::{self, Period};

/// The SHA-1 Redis names `script` by (lowercase hex).
pub fn script_sha(script: &str) -> String {
    hex::encode(Sha1::digest(script.as_bytes()))
}

/// The SHA-1 Redis knows [`TOUCH`] by.
pub fn touch_sha() -> &'static str {
    static SHA: OnceLock<String> = OnceLock::new();
    SHA.get_or_init(|| script_sha(TOUCH))
}

/// The SHA-1 Redis knows [`END`] by.
pub fn end_sha() -> &'static str {
    static SHA: OnceLock<String> = OnceLock::new();
    SHA.get_or_init(|| script_sha(END))
}

/// Adds `SCRIPT LOAD` of both scripts to `pipe`; call it before adding any script call.
pub fn load_scripts(pipe: &mut redis::Pipeline) {
    for script in [TOUCH, END] {
        pipe.cmd("SCRIPT").arg("LOAD").arg(script).ignore();
    }
}

/// Per session, per batch: first sight, promotion of a light record, activity, user attach,
/// AAL2 step-up.
///
/// KEYS: 1 session hash, 2 active sessions, 3 user's sessions zset, 4 user's active set,
///       5 daily hash, 6 hourly hash, 7 AAL2 event key, 8 actions list, 9 recent sessions zset,
///       10 the online sessions zset (signed-in active sessions by last activity).
/// ARGV: 1 sid, 2 user_id|'', 3 first ts ms, 4 last ts ms, 5 page views, 6 hits, 7 ip,
///       8 country, 9 city, 10 browser, 11 os, 12 device, 13 auth source, 14 aal|'',
///       15 ttl s, 16 email|'', 17 aal2 event JSON, 18 login action JSON, 19 actions cap,
///       20 recent sessions cap (unused: the batch trims, see [`batch_expiries`]), 21 AAL2 event ttl s, 22 the batch's first ip (the session's
///       `first_ip` if it starts here; 7 is its latest), 23 n = number of page entries, then n
///       groups of 4: the session's viewed-pages set for a period, its ttl, the template, the
///       period's `page_sessions` zset. A template new to the set counts one more distinct
///       session for that page in that period. Then, from T = 24 + 4n: T the ttl s of a record
///       without a user; T+1 the light record (JSON array, see [`light_record`]) when the batch
///       may start one ('' otherwise); T+2 that batch's page-view action JSON ('' if none; the
///       pipeline does not push it, the script does unless the record stays light); T+3 the
///       light bucket of the batch's day; T+4 when it expires (Unix s, `EXPIREAT`); T+5 the
///       session's pages-set key prefix;
///       T+6 the day and T+7 the hour pages-set ttl s; T+8 m = number of light buckets to
///       search, then m bucket keys (each searched with its `:ended` twin). (These keys are derived per batch, so they are passed as
///       ARGV; analytics does not support Redis Cluster, see docs/redis-schema.md.)
/// Returns {started, user_attached, aal2_step_up} as 0/1.
///
/// A session first seen without a user and by at most one request becomes a *light* record:
/// one field in the day's light bucket, counted in `sessions_started` and `page_sessions` but
/// not in the active set. Its next batch (a second request, a user) finds it, removes it and
/// writes the full record from it as if it had been full all along: its start, first address,
/// device, first page (in the pages sets and the action list) and counts. A light record that
/// ended (moved to its bucket's `:ended` twin) carries its end, so the promoted record is ended
/// too. A light record older than the app's session lifetime is gone, as a full record would
/// be: the session starts anew.
///
/// It reads the session's hash once (`HMGET`) and writes every changed field in one `HSET`.
/// Keys that every session of a batch shares (the active, recent and online sets, the period
/// hashes and `page_sessions` zsets) get their `EXPIRE` (and the recent set its trim) once per
/// batch, after the scripts, from [`batch_expiries`], not once per session here.
pub const TOUCH: &str = r#"
local h, sid = KEYS[1], ARGV[1]
local ttl = tonumber(ARGV[15])
local pages = tonumber(ARGV[23])
local T = 24 + pages * 4
local anon_ttl = math.min(ttl, tonumber(ARGV[T]))
local light_json, pending = ARGV[T + 1], ARGV[T + 2]
local started, light = 0, false
if redis.call('EXISTS', h) == 0 then
  for i = 1, tonumber(ARGV[T + 8]) do
    for _, b in ipairs({ARGV[T + 8 + i], ARGV[T + 8 + i] .. ':ended'}) do
      local v = redis.call('HGET', b, sid)
      if v then
        redis.call('HDEL', b, sid)
        light = cjson.decode(v)
        if tonumber(light[1]) < tonumber(ARGV[3]) - anon_ttl * 1000 then light = false end
        break
      end
    end
    if light then break end
  end
  if not light then
    started = 1
    redis.call('HINCRBY', KEYS[5], 'sessions_started', 1)
    redis.call('HINCRBY', KEYS[6], 'sessions_started', 1)
    if light_json ~= '' then
      -- A first sight without a user, by one request at most: one field, nothing else.
      redis.call('HSET', ARGV[T + 3], sid, light_json)
      redis.call('EXPIREAT', ARGV[T + 3], ARGV[T + 4])
      for i = 0, pages - 1 do
        local b = 24 + i * 4
        redis.call('ZINCRBY', ARGV[b + 3], 1, ARGV[b + 2])
      end
      return {1, 0, 0}
    end
  end
end
local set = {}
local function put(field, value)
  set[#set + 1] = field
  set[#set + 1] = value
end
local acts = {}
local last, ended, uid, prev_aal, start
if started == 1 or light then
  start, ended, uid, prev_aal = ARGV[3], false, false, false
  local pv, hits, first_ip = tonumber(ARGV[5]), tonumber(ARGV[6]), ARGV[22]
  local browser, os, device = ARGV[10], ARGV[11], ARGV[12]
  if light then
    -- {start ms, first page ISO time, ip, browser, os, device, country, city, hits, page views,
    --  first page, [end ms, duration s, end reason]}
    start, pv, hits = light[1], pv + tonumber(light[10]), hits + tonumber(light[9])
    if light[3] ~= '' then first_ip = light[3] end
    if light[4] ~= '' then browser, os, device = light[4], light[5], light[6] end
    if light[7] ~= '' then put('country', light[7]); put('city', light[8]) end
    if light[11] ~= '' then
      local iso, page, prefix = light[2], light[11], ARGV[T + 5]
      redis.call('SADD', prefix .. string.sub(iso, 1, 10), page)
      redis.call('EXPIRE', prefix .. string.sub(iso, 1, 10), ARGV[T + 6])
      redis.call('SADD', prefix .. string.sub(iso, 1, 13), page)
      redis.call('EXPIRE', prefix .. string.sub(iso, 1, 13), ARGV[T + 7])
      acts[1] = '{"timestamp":"' .. iso .. '","action":"page_view","page":' .. cjson.encode(page) .. '}'
    end
    if light[12] then
      ended = true
      put('end_time', light[12]); put('duration', light[13]); put('end_reason', light[14])
    end
  end
  put('session_id', sid); put('start_time', start); put('page_views', pv); put('hits', hits)
  put('first_ip', first_ip); put('browser', browser); put('os', os); put('device', device)
  put('auth_source', ARGV[13])
  last = tonumber(start)
  redis.call('ZADD', KEYS[9], start, sid)
else
  local cur = redis.call('HMGET', h, 'last_time', 'end_time', 'user_id', 'aal', 'start_time')
  last, ended, uid, prev_aal, start = tonumber(cur[1] or '0'), cur[2] ~= false, cur[3], cur[4], cur[5]
  redis.call('HINCRBY', h, 'page_views', ARGV[5])
  redis.call('HINCRBY', h, 'hits', ARGV[6])
end
if tonumber(ARGV[4]) > last then put('last_time', ARGV[4]) elseif started == 1 or light then put('last_time', start) end
if ARGV[7] ~= '' then put('ip', ARGV[7]) end
if ARGV[13] ~= 'anonymous' and ARGV[13] ~= '' then put('auth_source', ARGV[13]) end
if ARGV[8] ~= '' then put('country', ARGV[8]) end
if ARGV[9] ~= '' then put('city', ARGV[9]) end
if not ended then
  redis.call('SADD', KEYS[2], sid)
end
local attached = 0
if ARGV[2] ~= '' then
  if not uid then
    attached = 1
    uid = ARGV[2]
    put('user_id', ARGV[2])
    if ARGV[16] ~= '' then put('email', ARGV[16]) end
    redis.call('ZADD', KEYS[3], start, sid)
    redis.call('EXPIRE', KEYS[3], ttl)
    redis.call('HINCRBY', KEYS[5], 'logins', 1)
    redis.call('HINCRBY', KEYS[6], 'logins', 1)
    acts[#acts + 1] = ARGV[18]
  end
  if not ended and uid == ARGV[2] then
    redis.call('SADD', KEYS[4], sid)
    redis.call('EXPIRE', KEYS[4], ttl)
  end
end
if not ended and uid then
  -- Who is online: scored by the latest activity known (batches may arrive out of order).
  redis.call('ZADD', KEYS[10], 'GT', math.max(tonumber(ARGV[4]), tonumber(last or 0)), sid)
end
if pending ~= '' then acts[#acts + 1] = pending end
if #acts > 0 then
  redis.call('LPUSH', KEYS[8], unpack(acts))
  redis.call('LTRIM', KEYS[8], 0, tonumber(ARGV[19]) - 1)
  if uid then redis.call('EXPIRE', KEYS[8], ttl) else redis.call('EXPIRE', KEYS[8], anon_ttl) end
end
local stepped = 0
if ARGV[14] ~= '' then
  if ARGV[14] == 'aal2' and prev_aal ~= 'aal2' then
    redis.call('SET', KEYS[7], ARGV[17], 'EX', ARGV[21])
    redis.call('HINCRBY', KEYS[5], 'aal2_step_ups', 1)
    stepped = 1
  end
  put('aal', ARGV[14])
end
if #set > 0 then redis.call('HSET', h, unpack(set)) end
for i = 0, pages - 1 do
  local b = 24 + i * 4
  if redis.call('SADD', ARGV[b], ARGV[b + 2]) == 1 then
    redis.call('EXPIRE', ARGV[b], ARGV[b + 1])
    redis.call('ZINCRBY', ARGV[b + 3], 1, ARGV[b + 2])
  end
end
-- A session without a user lives at most the app's session lifetime: a visitor the app gave a
-- session and never saw again must not stay for the whole retention.
if uid then
  redis.call('EXPIRE', h, ttl)
else
  redis.call('EXPIRE', h, anon_ttl)
end
return {started, attached, stepped}
"#;

/// Ends a session once: sets end time and duration, leaves the active sets, counts the end and
/// its duration (total and histogram bucket) in the period of the end. A light record (see
/// [`TOUCH`]) is ended by appending its end to its array and moving it to its bucket's
/// `:ended` twin.
///
/// KEYS: 1 session hash, 2 active sessions, 3 daily hash, 4 hourly hash, 5 online sessions.
/// ARGV: 1 sid, 2 end ts ms, 3 reason, 4 ttl s, 5 active-user key prefix,
///       6 '1' to end at the last activity instead (expiry, idle), 7 bucket bounds "60,300,...",
///       8 idle threshold ms: when > 0, end only if the session is still idle (the sweep's
///       reading may be stale by the time the batch is written), 9 m = number of light buckets
///       to search, then m pairs (bucket key, its expiry in Unix s).
/// Returns the duration in seconds, or -1 when there was nothing to end.
pub const END: &str = r#"
local h, sid = KEYS[1], ARGV[1]
local start, last, uid, bucket, light
if redis.call('EXISTS', h) == 0 then
  for i = 1, tonumber(ARGV[9]) do
    local b = 8 + 2 * i
    local v = redis.call('HGET', ARGV[b], sid)
    if v then
      bucket, light = b, cjson.decode(v)
      break
    end
  end
  if not light then
    redis.call('SREM', KEYS[2], sid)
    redis.call('ZREM', KEYS[5], sid)
    return -1
  end
  start = tonumber(light[1])
  last = start
else
  local cur = redis.call('HMGET', h, 'end_time', 'start_time', 'last_time', 'user_id')
  if cur[1] then return -1 end
  start, last, uid = tonumber(cur[2] or ARGV[2]), tonumber(cur[3] or cur[2] or '0'), cur[4]
end
local idle = tonumber(ARGV[8])
if idle > 0 and tonumber(ARGV[2]) - last < idle then return -1 end
local stop = tonumber(ARGV[2])
if ARGV[6] == '1' then stop = last end
if stop < start then stop = start end
local dur = math.floor((stop - start) / 1000)
if light then
  light[12], light[13], light[14] = string.format('%d', stop), dur, ARGV[3]
  local ended_bucket = ARGV[bucket] .. ':ended'
  redis.call('HDEL', ARGV[bucket], sid)
  redis.call('HSET', ended_bucket, sid, cjson.encode(light))
  redis.call('EXPIREAT', ended_bucket, ARGV[bucket + 1])
else
  redis.call('HSET', h, 'end_time', stop, 'duration', dur, 'end_reason', ARGV[3])
end
redis.call('SREM', KEYS[2], sid)
redis.call('ZREM', KEYS[5], sid)
if uid then redis.call('SREM', ARGV[5] .. uid, sid) end
local bucket_field = 'duration_gt_max'
for b in string.gmatch(ARGV[7], '[^,]+') do
  if dur <= tonumber(b) then bucket_field = 'duration_le_' .. b break end
end
for i = 3, 4 do
  redis.call('HINCRBY', KEYS[i], 'sessions_ended', 1)
  redis.call('HINCRBY', KEYS[i], 'duration_total_s', dur)
  redis.call('HINCRBY', KEYS[i], bucket_field, 1)
  redis.call('EXPIRE', KEYS[i], ARGV[4])
end
redis.call('HINCRBY', KEYS[3], 'ended_' .. ARGV[3], 1)
-- An anonymous record keeps the shorter life TOUCH gave it.
if uid then redis.call('EXPIRE', h, ARGV[4]) end
return dur
"#;

/// Upper bounds (seconds) of the session-duration histogram buckets.
pub const DURATION_BUCKETS: &[u64] = &[10, 30, 60, 300, 900, 1800, 3600, 7200, 14400, 28800, 86400];

/// Inputs of one [`TOUCH`] call.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Touch {
    pub sid: String,
    pub user_id: Option<String>,
    pub email: Option<String>,
    pub first_ts_ms: i64,
    pub last_ts_ms: i64,
    pub page_views: i64,
    pub hits: i64,
    /// The latest address, and the first one seen in this batch.
    pub ip: Option<std::net::IpAddr>,
    pub first_ip: Option<std::net::IpAddr>,
    pub country: String,
    pub city: String,
    pub browser: String,
    pub os: String,
    pub device: String,
    /// `flask_session`, `kratos` or `anonymous`.
    pub auth_source: &'static str,
    pub aal: Option<String>,
    /// Pages (templates) viewed in this batch, per period, each once.
    pub pages: std::collections::BTreeMap<keys::PeriodSlot, std::collections::BTreeSet<String>>,
}

/// The batch of a session that may start as a light record (see [`TOUCH`]): no user, no AAL,
/// one request at most, no action but that request's page view.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LightStart<'a> {
    /// The page view (time, template), if the request was one.
    pub page_view: Option<(i64, &'a str)>,
}

/// The light record of a session starting with `t`: a JSON array of
/// `[start ms, first page ISO time, ip, browser, os, device, country, city, hits, page views,
/// first page]` (strings but for the counts; `""` when unknown), to which `END` appends
/// `[end ms, duration s, end reason]`. About 110 bytes.
pub fn light_record(t: &Touch, light: &LightStart<'_>, privacy: &Privacy) -> String {
    let (iso, page) = match light.page_view {
        Some((ts, page)) => (iso_millis(ts), page),
        None => (String::new(), ""),
    };
    serde_json::json!([
        t.first_ts_ms.to_string(),
        iso,
        privacy.stored_ip(t.first_ip, t.first_ts_ms),
        t.browser,
        t.os,
        t.device,
        t.country,
        t.city,
        t.hits,
        t.page_views,
        page,
    ])
    .to_string()
}

/// After a batch's `TOUCH` calls: one trim of the recent sessions and one `EXPIRE` (to `ttl_secs`)
/// of each key they share, the active, recent and online sets and each touch's period hashes
/// and `page_sessions` zsets, but for those in `expired` (the batch expired them already).
pub fn batch_expiries<'a>(pipe: &mut redis::Pipeline, touches: impl Iterator<Item = &'a Touch>, ttl_secs: u64, expired: &std::collections::BTreeSet<String>) {
    let mut shared: std::collections::BTreeSet<String> = [keys::active_sessions(), keys::recent_sessions(), keys::online_sessions()].map(str::to_owned).into();
    let mut any = false;
    for t in touches {
        any = true;
        shared.insert(keys::analytics_period(Period::Day, &Period::Day.label(t.first_ts_ms)));
        shared.insert(keys::analytics_period(Period::Hour, &Period::Hour.label(t.first_ts_ms)));
        for slot in t.pages.keys() {
            shared.insert(keys::analytics_breakdown(slot.period, &slot.label(), keys::PAGE_SESSIONS));
        }
    }
    if !any {
        return;
    }
    pipe.zremrangebyrank(keys::recent_sessions(), 0, -(keys::RECENT_SESSIONS_CAP as isize) - 1).ignore();
    for key in shared.difference(expired) {
        pipe.expire(key, ttl_secs as i64).ignore();
    }
}

/// The `EVAL` command for one session touch; `light` when the batch may start a light record.
pub fn touch_cmd(t: &Touch, ttl_secs: u64, anonymous_ttl_secs: u64, actions_cap: usize, light: Option<&LightStart<'_>>, privacy: &Privacy) -> redis::Cmd {
    let user = t.user_id.as_deref().unwrap_or("");
    let day = Period::Day.label(t.first_ts_ms);
    let hour = Period::Hour.label(t.first_ts_ms);
    let aal2_json = serde_json::json!({
        "session_id": t.sid, "user_id": t.user_id, "timestamp": t.last_ts_ms / 1000, "aal": "aal2",
    })
    .to_string();
    let login_json = action_json(t.first_ts_ms, "login", None);
    let mut c = redis::cmd("EVALSHA");
    c.arg(touch_sha())
        .arg(10)
        .arg(keys::analytics_session(&t.sid))
        .arg(keys::active_sessions())
        .arg(keys::user_sessions(user))
        .arg(keys::active_user(user))
        .arg(keys::analytics_period(Period::Day, &day))
        .arg(keys::analytics_period(Period::Hour, &hour))
        .arg(keys::aal2_event(&t.sid, t.last_ts_ms / 1000))
        .arg(keys::session_actions(&t.sid))
        .arg(keys::recent_sessions())
        .arg(keys::online_sessions())
        .arg(&t.sid)
        .arg(user)
        .arg(t.first_ts_ms)
        .arg(t.last_ts_ms)
        .arg(t.page_views)
        .arg(t.hits)
        .arg(privacy.stored_ip(t.ip, t.last_ts_ms))
        .arg(&t.country)
        .arg(&t.city)
        .arg(&t.browser)
        .arg(&t.os)
        .arg(&t.device)
        .arg(t.auth_source)
        .arg(t.aal.as_deref().unwrap_or(""))
        .arg(ttl_secs)
        .arg(privacy.stored_email(t.email.as_deref().unwrap_or("")))
        .arg(aal2_json)
        .arg(login_json)
        .arg(actions_cap.max(1))
        .arg(keys::RECENT_SESSIONS_CAP)
        .arg(keys::AAL2_EVENT_TTL_SECS)
        .arg(privacy.stored_ip(t.first_ip, t.first_ts_ms))
        .arg(t.pages.values().map(|templates| templates.len()).sum::<usize>());
    for (slot, templates) in &t.pages {
        let label = slot.label();
        let (seen, breakdown) = (keys::session_pages(&t.sid, &label), keys::analytics_breakdown(slot.period, &label, keys::PAGE_SESSIONS));
        for template in templates {
            c.arg(&seen).arg(keys::session_pages_ttl_secs(slot.period)).arg(template).arg(&breakdown);
        }
    }
    let anonymous_ttl = anonymous_ttl_secs.min(ttl_secs);
    c.arg(anonymous_ttl);
    match light {
        Some(l) => c.arg(light_record(t, l, privacy)).arg(l.page_view.map(|(ts, page)| action_json(ts, "page_view", Some(page))).unwrap_or_default()),
        None => c.arg("").arg(""),
    };
    let buckets = keys::light_buckets(t.first_ts_ms, anonymous_ttl);
    let home = keys::light_bucket(t.first_ts_ms, anonymous_ttl);
    c.arg(home.key)
        .arg(home.expire_at)
        .arg(keys::session_pages_prefix(&t.sid))
        .arg(keys::session_pages_ttl_secs(Period::Day))
        .arg(keys::session_pages_ttl_secs(Period::Hour))
        .arg(buckets.len());
    for b in buckets {
        c.arg(b.key);
    }
    c
}

/// An address as the session record stores it; empty when unknown.
/// One entry of a session's action list: `{"timestamp": ISO-8601, "action": ..., "page": ...}`.
pub fn action_json(ts_ms: i64, action: &str, page: Option<&str>) -> String {
    serde_json::json!({
        "timestamp": iso_millis(ts_ms),
        "action": action,
        "page": page,
    })
    .to_string()
}

/// `ts_ms` as `2026-12-04T03:07:31.123Z`; its first 10 and 13 characters are the day and hour
/// labels (the `TOUCH` script relies on it).
pub fn iso_millis(ts_ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ts_ms).unwrap_or_default().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// The `EVAL` command that ends `sid` for `reason`: a logout ends it at `ts_ms`; an expiry or
/// idle end at its last activity, and an idle end only if it is still idle for `idle_timeout_ms`
/// when the script runs (the reading that found it idle may be stale).
/// `anonymous_ttl_secs` says which light buckets may hold it.
pub fn end_for(sid: &str, ts_ms: i64, reason: EndReason, idle_timeout_ms: u64, ttl_secs: u64, anonymous_ttl_secs: u64) -> redis::Cmd {
    let at_last = matches!(reason, EndReason::Expired | EndReason::Idle);
    let idle_check = if reason == EndReason::Idle { idle_timeout_ms.max(1) } else { 0 };
    let mut c = end_cmd(sid, ts_ms, reason.as_str(), at_last, idle_check, ttl_secs);
    let buckets = keys::light_buckets(ts_ms, anonymous_ttl_secs.min(ttl_secs));
    c.arg(buckets.len());
    for b in buckets {
        c.arg(b.key).arg(b.expire_at);
    }
    c
}

/// The `EVAL` command that ends `sid` at `ts_ms` (or at its last activity when
/// `at_last_activity`); with `idle_check_ms > 0` only if it has been idle that long.
fn end_cmd(sid: &str, ts_ms: i64, reason: &str, at_last_activity: bool, idle_check_ms: u64, ttl_secs: u64) -> redis::Cmd {
    let bounds: Vec<String> = DURATION_BUCKETS.iter().map(u64::to_string).collect();
    let mut c = redis::cmd("EVALSHA");
    c.arg(end_sha())
        .arg(5)
        .arg(keys::analytics_session(sid))
        .arg(keys::active_sessions())
        .arg(keys::analytics_period(Period::Day, &Period::Day.label(ts_ms)))
        .arg(keys::analytics_period(Period::Hour, &Period::Hour.label(ts_ms)))
        .arg(keys::online_sessions())
        .arg(sid)
        .arg(ts_ms)
        .arg(reason)
        .arg(ttl_secs)
        .arg(keys::active_user_prefix())
        .arg(if at_last_activity { "1" } else { "0" })
        .arg(bounds.join(","))
        .arg(idle_check_ms);
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Calls name the scripts by the SHA-1 Redis computes, and a pipeline loads them before
    /// calling them (the integration tests run this against a real Redis, including one
    /// restarted with an empty script cache).
    #[test]
    fn shas_are_what_redis_computes() {
        // Redis names a script by the SHA-1 of its text, lowercase hex.
        assert_eq!(script_sha("return 1"), "e0e1f9fabfc9d4800c877a703b823ac0578ff8db");
        assert_eq!(touch_sha().len(), 40);
        assert_ne!(touch_sha(), end_sha());
        let mut p = redis::pipe();
        load_scripts(&mut p);
        p.add_command(end_for("s", 1, EndReason::Logout, 1000, 60, 60));
        let cmds: Vec<String> = p.cmd_iter().map(|c| String::from_utf8_lossy(&c.get_packed_command()).into_owned()).collect();
        assert!(cmds[0].contains("SCRIPT") && cmds[2].contains("EVALSHA") && cmds[2].contains(end_sha()));
    }
}
