//! Session anomaly detection (a stolen cookie, a stolen account), off the request path: the
//! writer turns what one batch saw of each signed-in session into observations, and the
//! [`detect_script`] compares them with the session's fingerprint in Redis and records each
//! anomaly once per session and detector. Pure (command builders).
//!
//! It runs in the batch's `MULTI`/`EXEC` right after the session's `TOUCH`, so it is atomic with
//! it and, like every batch, applied exactly once however many instances and retries there are.
//! Only sessions with a user are examined: an anonymous session has nothing to steal.

use std::net::IpAddr;
use std::sync::OnceLock;

use crate::capture::geo::Location;
use crate::capture::privacy::address_prefix;
use crate::capture::session_scripts::{iso_millis, script_sha};
use crate::config::security::SecuritySection;
use crate::store::keys::{self, Period};

/// Observations kept per session per batch (changes only; a session that keeps its address and
/// browser makes one).
pub const MAX_OBSERVATIONS: usize = 16;

/// Known devices and countries kept per user for `new_device` / `new_country`.
pub const MAX_KNOWN_PER_USER: usize = 64;

/// What one request told about its session.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    pub ts_ms: i64,
    pub prefix: String,
    pub country: String,
    pub city: String,
    pub point: Option<(f64, f64)>,
    /// `AS{number} {organisation}`; empty without an ASN database or record.
    pub asn: String,
    /// `browser|os|device class`; empty when the User-Agent said nothing.
    pub ua: String,
    /// The address it was made from (not sent to the script).
    pub ip: Option<IpAddr>,
}

impl Observation {
    pub fn new(ts_ms: i64, ip: Option<IpAddr>, location: &Location, ua: String) -> Self {
        Observation {
            ts_ms,
            prefix: ip.map(address_prefix).unwrap_or_default(),
            country: location.country.clone().unwrap_or_default(),
            city: location.city.clone().unwrap_or_default(),
            point: location.point,
            asn: location.asn.clone().unwrap_or_default(),
            ua,
            ip,
        }
    }

    /// Whether a request from `ip` at `location` with browser `ua` (`browser|os|class` parts)
    /// would observe exactly this again; decided without building the observation (it runs
    /// for every signed-in request).
    pub fn repeats(&self, ip: Option<IpAddr>, location: &Location, ua: [&str; 3]) -> bool {
        let same_ua = if self.ua.is_empty() { ua[0] == crate::capture::device::UNKNOWN } else { crate::capture::device::is_joined(&self.ua, "|", ua) };
        same_ua
            && self.ip == ip
            && location.country.as_deref().unwrap_or_default() == self.country
            && location.point == self.point
            && location.asn.as_deref().unwrap_or_default() == self.asn
    }

    /// Same place and browser: nothing new to compare.
    pub fn same_as(&self, other: &Observation) -> bool {
        self.prefix == other.prefix && self.country == other.country && self.ua == other.ua && self.point == other.point && self.asn == other.asn
    }

    fn json(&self) -> serde_json::Value {
        let mut o = serde_json::json!({
            "t": self.ts_ms,
            "iso": iso_millis(self.ts_ms),
            "p": self.prefix, "c": self.country, "city": self.city, "ua": self.ua, "asn": self.asn,
        });
        if let Some((lat, lon)) = self.point {
            o["lat"] = serde_json::json!(lat);
            o["lon"] = serde_json::json!(lon);
        }
        o
    }
}

/// The detectors' settings, as the script reads them (one JSON made at start-up).
pub fn settings_json(s: &SecuritySection, ttl_secs: u64) -> Option<String> {
    let severity: serde_json::Map<String, serde_json::Value> =
        s.severities().into_iter().filter_map(|(name, sev)| sev.map(|v| (name.to_owned(), serde_json::json!(v.as_str())))).collect();
    if severity.is_empty() {
        return None;
    }
    Some(
        serde_json::json!({
            "severity": severity,
            "kmh": s.impossible_travel_kmh,
            "min_km": s.travel_min_km,
            "max_concurrent": s.max_concurrent_sessions,
            "max_prefixes": s.max_addresses_per_session,
            "prefix_window_ms": u64::from(s.address_window_minutes) * 60_000,
            "burst_threshold": s.auth_failure_threshold,
            "burst_cap": keys::AUTH_FAILURE_ADDRESS_CAP,
            "other": keys::OTHER,
            "cap": s.max_anomalies_per_day,
            "known_cap": MAX_KNOWN_PER_USER,
            "stream_cap": crate::capture::alerts::STREAM_CAP,
            "ttl": ttl_secs,
        })
        .to_string(),
    )
}

/// The anomaly detection script for signed-in sessions: [`RECORD`] then [`DETECT_BODY`].
pub fn detect_script() -> &'static str {
    static SCRIPT: OnceLock<String> = OnceLock::new();
    SCRIPT.get_or_init(|| format!("{RECORD}{DETECT_BODY}"))
}

/// The SHA-1 Redis knows [`detect_script`] by.
pub fn detect_sha() -> &'static str {
    static SHA: OnceLock<String> = OnceLock::new();
    SHA.get_or_init(|| script_sha(detect_script()))
}

/// The burst-of-invalid-credentials script: [`RECORD`] then [`AUTH_BURST_BODY`].
pub fn auth_burst_script() -> &'static str {
    static SCRIPT: OnceLock<String> = OnceLock::new();
    SCRIPT.get_or_init(|| format!("{RECORD}{AUTH_BURST_BODY}"))
}

/// The SHA-1 Redis knows [`auth_burst_script`] by.
pub fn auth_burst_sha() -> &'static str {
    static SHA: OnceLock<String> = OnceLock::new();
    SHA.get_or_init(|| script_sha(auth_burst_script()))
}

/// Invalid credentials one batch saw from one address in one window.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AuthFailures {
    /// Distinct credential fingerprints (hex), at most [`MAX_FAILED_CREDENTIALS`] kept.
    pub credentials: std::collections::BTreeSet<String>,
    /// Failures by kind (`bad_signature`, `kratos_unauthenticated`, `revoked`).
    pub kinds: std::collections::BTreeMap<&'static str, i64>,
    pub last_ts_ms: i64,
}

/// Credential fingerprints one batch keeps per address and window (a burst needs far fewer).
pub const MAX_FAILED_CREDENTIALS: usize = 256;

/// Addresses one batch keeps apart per window; the rest are counted as `other`.
pub const MAX_FAILING_ADDRESSES_PER_BATCH: usize = 1_024;

/// The `EVALSHA` of [`auth_burst_script`] for one window's failures in one batch.
pub fn auth_burst_cmd(
    window_start_secs: i64,
    window_secs: u32,
    failures: &std::collections::BTreeMap<String, AuthFailures>,
    settings_json: &str,
) -> redis::Cmd {
    let day = Period::Day.label(window_start_secs * 1000);
    let entries: Vec<serde_json::Value> = failures
        .iter()
        .map(|(addr, f)| {
            serde_json::json!({
                "a": addr,
                "h": f.credentials.iter().collect::<Vec<_>>(),
                "k": f.kinds,
                "iso": iso_millis(f.last_ts_ms),
            })
        })
        .collect();
    let mut c = redis::cmd("EVALSHA");
    c.arg(auth_burst_sha())
        .arg(4)
        .arg(keys::auth_failures(window_start_secs))
        .arg(keys::anomalies(&day))
        .arg(keys::analytics_period(Period::Day, &day))
        .arg(keys::alert_stream())
        .arg(settings_json)
        .arg(serde_json::Value::Array(entries).to_string())
        .arg(window_secs);
    c
}

/// The `EVALSHA` of [`detect_script`] for one signed-in session's batch.
pub fn detect_cmd(sid: &str, user_id: &str, aal: Option<&str>, observations: &[Observation], settings_json: &str) -> redis::Cmd {
    let day = Period::Day.label(observations.first().map(|o| o.ts_ms).unwrap_or_default());
    let obs: Vec<serde_json::Value> = observations.iter().map(Observation::json).collect();
    let mut c = redis::cmd("EVALSHA");
    c.arg(detect_sha())
        .arg(6)
        .arg(keys::analytics_session(sid))
        .arg(keys::anomalies(&day))
        .arg(keys::analytics_period(Period::Day, &day))
        .arg(keys::user_known(user_id))
        .arg(keys::active_user(user_id))
        .arg(keys::alert_stream())
        .arg(sid)
        .arg(user_id)
        .arg(settings_json)
        .arg(serde_json::Value::Array(obs).to_string())
        .arg(aal.unwrap_or(""));
    c
}

/// Records one anomaly (shared by both scripts): the day's list (newest
/// `max_anomalies_per_day`), the day's per-severity counter, and the alert stream.
const RECORD: &str = r#"
local function record(list, day, stream, cfg, entry)
  local json = cjson.encode(entry)
  redis.call('LPUSH', list, json)
  redis.call('LTRIM', list, 0, cfg.cap - 1)
  redis.call('EXPIRE', list, cfg.ttl)
  redis.call('HINCRBY', day, 'anomalies_' .. entry.severity, 1)
  redis.call('EXPIRE', day, cfg.ttl)
  redis.call('XADD', stream, 'MAXLEN', '~', cfg.stream_cap, '*', 'anomaly', json)
  redis.call('EXPIRE', stream, cfg.ttl)
end
"#;

/// Counts distinct invalid credentials per address in one window and records
/// `auth_failure_burst` once per address and window when they reach the threshold.
///
/// KEYS: 1 the window's hash ([`keys::auth_failures`]), 2 the day's anomaly list, 3 the day's
///       analytics hash, 4 the alert stream.
/// ARGV: 1 settings JSON, 2 `[{a: address, h: [fingerprints], k: {kind: n}, iso}]`, 3 the
///       window in seconds. Returns the number of bursts recorded.
///
/// A credential counts once per address and window however often it is retried (a browser with
/// one stale cookie is not an attack); once an address has reached the threshold its further
/// credentials are not kept. At most `burst_cap` addresses are kept apart, the rest count as
/// `other` (which can fire too: a spray from many addresses).
const AUTH_BURST_BODY: &str = r#"
local h = KEYS[1]
local cfg = cjson.decode(ARGV[1])
local sev = cfg.severity.auth_failure_burst
local fired = 0
for _, e in ipairs(cjson.decode(ARGV[2])) do
  local a = e.a
  if redis.call('HEXISTS', h, a) == 0 then
    if tonumber(redis.call('HGET', h, '#') or '0') >= cfg.burst_cap then
      a = cfg.other
    else
      redis.call('HINCRBY', h, '#', 1)
      redis.call('HSET', h, a, 0)
    end
  end
  local n = tonumber(redis.call('HGET', h, a) or '0')
  for _, fp in ipairs(e.h) do
    if n >= cfg.burst_threshold then break end
    if redis.call('HSETNX', h, a .. '|' .. fp, 1) == 1 then n = n + 1 end
  end
  redis.call('HSET', h, a, n)
  for kind, c in pairs(e.k) do redis.call('HINCRBY', h, a .. '#' .. kind, c) end
  if sev and n >= cfg.burst_threshold and redis.call('HSETNX', h, '!' .. a, e.iso) == 1 then
    local kinds = {}
    for _, kind in ipairs({'bad_signature', 'kratos_unauthenticated', 'revoked'}) do
      local c = redis.call('HGET', h, a .. '#' .. kind)
      if c then kinds[kind] = tonumber(c) end
    end
    record(KEYS[2], KEYS[3], KEYS[4], cfg, {timestamp = e.iso, session_id = cjson.null, user_id = cjson.null,
      detector = 'auth_failure_burst', severity = sev,
      evidence = {address = a, invalid_credentials = n, window_seconds = tonumber(ARGV[3]), kinds = kinds}})
    fired = fired + 1
  end
end
redis.call('EXPIRE', h, 2 * tonumber(ARGV[3]))
return fired
"#;

/// Compares a signed-in session's batch with its fingerprint and records anomalies.
///
/// KEYS: 1 session hash, 2 the day's anomaly list, 3 the day's analytics hash, 4 the user's
///       known devices and countries (set), 5 the user's active sessions (set), 6 the alert
///       stream (each anomaly is also an alert; see `capture::alerts`).
/// ARGV: 1 sid, 2 user id, 3 settings JSON ([`settings_json`]), 4 observations JSON (in time
///       order: `{t, iso, p, c, city, ua, asn[, lat, lon]}`), 5 the batch's AAL or ''.
/// Returns the number of anomalies recorded.
///
/// The fingerprint (`fp_ua`, `fp_prefix` with `fp_asn` when an ASN database is configured,
/// `fp_country`) is the session's first signed-in
/// observation; `geo_*` is its latest located point; `aal_max` whether it ever had AAL2. Each
/// detector fires at most once per session (field `anomaly:{detector}`). `pfx_recent` holds the
/// address prefixes of the last `prefix_window_ms` (JSON prefix → last seen ms, refreshed at
/// most once a minute, at most `max_prefixes` + 1 entries) for `many_addresses`.
const DETECT_BODY: &str = r#"
local h, sid, uid = KEYS[1], ARGV[1], ARGV[2]
if redis.call('EXISTS', h) == 0 then return 0 end
local cfg = cjson.decode(ARGV[3])
local obs = cjson.decode(ARGV[4])
if #obs == 0 then return 0 end
local fired = 0
local function anomaly(det, o, evidence)
  local sev = cfg.severity[det]
  if not sev then return end
  if redis.call('HSETNX', h, 'anomaly:' .. det, o.iso) == 0 then return end
  record(KEYS[2], KEYS[3], KEYS[6], cfg, {timestamp = o.iso, session_id = sid, user_id = uid, detector = det, severity = sev, evidence = evidence})
  fired = fired + 1
end
local function family(prefix)
  -- `a.b.c.0/24`, `x:y:z::/48`, or their keyed hashes `p4-…`, `p6-…` (see capture::privacy).
  if string.sub(prefix, 1, 3) == 'p6-' or string.find(prefix, ':', 1, true) then return 6 end
  return 4
end
local function km(lat1, lon1, lat2, lon2)
  local r = math.pi / 180
  local a = math.sin((lat2 - lat1) * r / 2) ^ 2 + math.cos(lat1 * r) * math.cos(lat2 * r) * math.sin((lon2 - lon1) * r / 2) ^ 2
  return 2 * 6371 * math.asin(math.min(1, math.sqrt(a)))
end
local cur = redis.call('HMGET', h, 'fp_ua', 'fp_prefix', 'fp_country', 'geo_lat', 'geo_lon', 'geo_ts', 'geo_city', 'aal_max', 'pfx_recent', 'fp_asn')
local fp_asn = cur[10]
local fp_ua, fp_prefix, fp_country = cur[1], cur[2], cur[3]
local lat, lon, gts, gcity = tonumber(cur[4]), tonumber(cur[5]), tonumber(cur[6]), cur[7]
local new_ua, new_country
local set = {}
local spread = cfg.severity.many_addresses and cfg.max_prefixes
local recent = (spread and cur[9]) and cjson.decode(cur[9]) or {}
local recent_changed = false
for _, o in ipairs(obs) do
  if spread and o.p ~= '' then
    if not recent[o.p] or o.t - recent[o.p] >= 60000 then recent[o.p] = o.t; recent_changed = true end
    local n, oldest, oldest_p = 0, nil, nil
    for p, t in pairs(recent) do
      if t < o.t - cfg.prefix_window_ms then
        recent[p] = nil; recent_changed = true
      else
        n = n + 1
        if not oldest or t < oldest then oldest, oldest_p = t, p end
      end
    end
    if n > cfg.max_prefixes then
      local list = {}
      for p in pairs(recent) do list[#list + 1] = p end
      table.sort(list)
      anomaly('many_addresses', o, {addresses = list, limit = cfg.max_prefixes, window_minutes = cfg.prefix_window_ms / 60000})
      recent[oldest_p] = nil
    end
  end
  if o.ua ~= '' then
    if not fp_ua then
      fp_ua, new_ua = o.ua, o
      set[#set + 1] = 'fp_ua'; set[#set + 1] = o.ua
    elseif o.ua ~= fp_ua then
      anomaly('ua_change', o, {old = fp_ua, new = o.ua})
    end
  end
  if o.p ~= '' then
    if not fp_prefix then
      fp_prefix = o.p
      set[#set + 1] = 'fp_prefix'; set[#set + 1] = o.p
      if o.asn ~= '' then
        fp_asn = o.asn
        set[#set + 1] = 'fp_asn'; set[#set + 1] = o.asn
      end
    elseif o.p ~= fp_prefix and family(o.p) == family(fp_prefix) then
      -- A dual-stack client moves between its IPv4 and IPv6 addresses all the time: only a
      -- change within one family is a change of network.
      local evidence = {old = fp_prefix, new = o.p}
      if fp_asn and o.asn ~= '' then evidence.old_asn = fp_asn; evidence.new_asn = o.asn end
      anomaly('ip_change', o, evidence)
    end
  end
  if o.c ~= '' then
    if not fp_country then
      fp_country, new_country = o.c, o
      set[#set + 1] = 'fp_country'; set[#set + 1] = o.c
    elseif o.c ~= fp_country then
      anomaly('country_change', o, {old = fp_country, new = o.c})
    end
  end
  if o.lat then
    if lat then
      local d = km(lat, lon, o.lat, o.lon)
      local hours = math.max(math.abs(o.t - gts), 1) / 3600000
      if d >= cfg.min_km and d / hours > cfg.kmh then
        anomaly('impossible_travel', o, {from = gcity or '', to = o.city, distance_km = math.floor(d), speed_kmh = math.floor(d / hours)})
      end
    end
    if not gts or o.t >= gts then lat, lon, gts, gcity = o.lat, o.lon, o.t, o.city end
  end
end
if lat then
  set[#set + 1] = 'geo_lat'; set[#set + 1] = tostring(lat)
  set[#set + 1] = 'geo_lon'; set[#set + 1] = tostring(lon)
  set[#set + 1] = 'geo_ts'; set[#set + 1] = string.format('%d', gts)
  set[#set + 1] = 'geo_city'; set[#set + 1] = gcity or ''
end
-- A device or country this user was not seen with before (only once they have a history).
local known = KEYS[4]
local known_n = redis.call('SCARD', known)
local has_history = known_n > 0
if new_ua and has_history and redis.call('SISMEMBER', known, 'ua:' .. new_ua.ua) == 0 then
  anomaly('new_device', new_ua, {device = new_ua.ua})
end
if new_country and has_history and redis.call('SISMEMBER', known, 'country:' .. new_country.c) == 0 then
  anomaly('new_country', new_country, {country = new_country.c})
end
local function remember(m)
  if known_n < cfg.known_cap then known_n = known_n + redis.call('SADD', known, m) end
end
if new_ua then remember('ua:' .. new_ua.ua) end
if new_country then remember('country:' .. new_country.c) end
if new_ua or new_country then redis.call('EXPIRE', known, cfg.ttl) end
local active = redis.call('SCARD', KEYS[5])
if active > cfg.max_concurrent then
  anomaly('concurrent_sessions', obs[#obs], {active_sessions = active, limit = cfg.max_concurrent})
end
if ARGV[5] == 'aal2' then
  if cur[8] ~= 'aal2' then set[#set + 1] = 'aal_max'; set[#set + 1] = 'aal2' end
elseif ARGV[5] == 'aal1' and cur[8] == 'aal2' then
  anomaly('aal_downgrade', obs[#obs], {from = 'aal2', to = 'aal1'})
end
if recent_changed then set[#set + 1] = 'pfx_recent'; set[#set + 1] = cjson.encode(recent) end
if #set > 0 then redis.call('HSET', h, unpack(set)) end
return fired
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_list_only_enabled_detectors() {
        let mut s = SecuritySection::default();
        s.detectors.insert("ip_change".into(), "off".into());
        let v: serde_json::Value = serde_json::from_str(&settings_json(&s, 60).unwrap()).unwrap();
        assert!(v["severity"].get("ip_change").is_none());
        assert_eq!(v["severity"]["ua_change"], "high");
        s.anomalies = false;
        assert_eq!(settings_json(&s, 60), None);
    }
}
