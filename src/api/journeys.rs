//! The reads of issue 17: acquisition (sessions and users by referrer domain and UTM tags),
//! funnels (sessions and users per step, in order) and retention cohorts. Each is one pipeline
//! over the range's keys (distinct users are counted in Redis by one read-only script, so the
//! member lists never leave it). I/O.

use std::collections::HashMap;

use chrono::Datelike;

use crate::api::endpoint::{param, parse_limit_or, ApiError};
use crate::api::query_error::QueryError;
use crate::api::ranges::{parse_range, top_summed, Range};
use crate::capture::retention;
use crate::config::funnel;
use crate::store::keys::{self, Period};
use crate::store::{RedisStore, StoreError};

/// Counts distinct members of the sets in KEYS by their first ARGV[1] (1 or 2) `\n`-separated
/// parts: `{dimension}\n{value}\n{user}` → users per value, `{step}\n{user}` → users per step.
/// Returns a flat array `[group, count, ...]`. Reads only.
const DISTINCT_USERS: &str = r#"
local pattern = '^([^\n]*)\n'
if ARGV[1] == '2' then pattern = '^([^\n]*\n[^\n]*)\n' end
local seen, counts = {}, {}
for _, k in ipairs(KEYS) do
  for _, m in ipairs(redis.call('SMEMBERS', k)) do
    if not seen[m] then
      seen[m] = true
      local g = string.match(m, pattern)
      if g then counts[g] = (counts[g] or 0) + 1 end
    end
  end
end
local out = {}
for g, n in pairs(counts) do
  out[#out + 1] = g
  out[#out + 1] = n
end
return out
"#;

fn distinct_users_cmd(sets: &[String], parts: u8) -> redis::Cmd {
    let mut c = redis::cmd("EVAL");
    c.arg(DISTINCT_USERS).arg(sets.len()).arg(sets).arg(parts);
    c
}

fn decode<T: redis::FromRedisValue>(v: &redis::Value) -> Result<T, QueryError> {
    Ok(redis::from_redis_value(v).map_err(StoreError::Redis)?)
}

fn group_counts(v: &redis::Value) -> Result<HashMap<String, i64>, QueryError> {
    let flat: Vec<redis::Value> = decode(v)?;
    let mut out = HashMap::new();
    for pair in flat.chunks(2) {
        if let [g, n] = pair {
            out.insert(decode::<String>(g)?, decode::<i64>(n)?);
        }
    }
    Ok(out)
}

/// `GET acquisition`: sessions by referrer domain and by each UTM tag (the `limit` largest),
/// each with its distinct users, over a day, an hour or a range.
pub async fn acquisition(store: &RedisStore, query: Option<&str>) -> Result<serde_json::Value, QueryError> {
    let range = parse_range(query)?;
    let limit = parse_limit_or(query, 10)?;
    let mut pipe = redis::pipe();
    for dim in keys::ACQUISITION_DIMENSIONS {
        for label in &range.labels {
            pipe.zrange_withscores(keys::acquisition(range.period, label, dim), 0, -1);
        }
    }
    for label in &range.labels {
        pipe.hget(keys::analytics_period(range.period, label), "landings");
    }
    let users_sets: Vec<String> = range.labels.iter().map(|l| keys::acquisition_users(range.period, l)).collect();
    pipe.add_command(distinct_users_cmd(&users_sets, 2));
    let replies: Vec<redis::Value> = store.pipeline(&pipe).await?;
    let n = range.labels.len();
    let users = group_counts(replies.last().unwrap_or(&redis::Value::Nil))?;
    let mut landings = 0i64;
    for v in &replies[keys::ACQUISITION_DIMENSIONS.len() * n..replies.len() - 1] {
        landings += decode::<Option<i64>>(v)?.unwrap_or(0);
    }
    let mut body = range.describe();
    body["sessions"] = serde_json::json!(landings);
    for (i, dim) in keys::ACQUISITION_DIMENSIONS.iter().enumerate() {
        let days: Vec<Vec<(String, f64)>> = replies[i * n..(i + 1) * n].iter().map(decode).collect::<Result<_, _>>()?;
        let rows: Vec<serde_json::Value> = top_summed_all(days, limit)
            .into_iter()
            .map(|(name, s)| {
                let u = users.get(&format!("{dim}\n{name}")).copied().unwrap_or(0);
                serde_json::json!({"name": name, "sessions": s as i64, "users": u})
            })
            .collect();
        body[*dim] = serde_json::json!(rows);
    }
    Ok(body)
}

/// [`top_summed`], also for one period (whose set is read whole here, in ascending order).
fn top_summed_all(mut days: Vec<Vec<(String, f64)>>, limit: usize) -> Vec<(String, f64)> {
    if days.len() == 1 {
        // A second, empty period makes it sum and sort like a range.
        days.push(Vec::new());
    }
    top_summed(days, limit)
}

/// The funnels defined: name → steps, in name order.
async fn definitions(store: &RedisStore) -> Result<Vec<(String, String)>, QueryError> {
    let mut defs: Vec<(String, String)> = store.query::<HashMap<String, String>>(redis::cmd("HGETALL").arg(keys::funnels())).await?.into_iter().collect();
    defs.sort();
    Ok(defs)
}

fn steps_of(json: &str) -> Vec<String> {
    serde_json::from_str(json).unwrap_or_default()
}

/// `GET funnels`.
pub async fn funnels(store: &RedisStore) -> Result<serde_json::Value, QueryError> {
    let defs = definitions(store).await?;
    let list: Vec<serde_json::Value> =
        defs.iter().map(|(name, json)| serde_json::json!({"name": name, "steps": steps_of(json), "version": funnel::version(json)})).collect();
    Ok(serde_json::json!({"funnels": list}))
}

/// `GET funnels/{name}`: per step, the sessions that reached it (in order) on the range's days,
/// the distinct users among them, and the conversion from the previous step.
pub async fn funnel(store: &RedisStore, name: &str, query: Option<&str>) -> Result<serde_json::Value, QueryError> {
    let range = parse_range(query)?;
    if range.period != Period::Day {
        return Err(ApiError::BadParameter { parameter: "period", message: "funnels are counted per day".into() }.into());
    }
    let Some(json) = store.query::<Option<String>>(redis::cmd("HGET").arg(keys::funnels()).arg(name)).await? else {
        return Err(QueryError::NotFound("no such funnel"));
    };
    let steps = steps_of(&json);
    let version = funnel::version(&json);
    let mut pipe = redis::pipe();
    for label in &range.labels {
        pipe.hgetall(keys::funnel_day(label, name, &version));
    }
    let users_sets: Vec<String> = range.labels.iter().map(|l| keys::funnel_day_users(l, name, &version)).collect();
    pipe.add_command(distinct_users_cmd(&users_sets, 1));
    let replies: Vec<redis::Value> = store.pipeline(&pipe).await?;
    let users = group_counts(replies.last().unwrap_or(&redis::Value::Nil))?;
    let mut sessions = vec![0i64; steps.len()];
    for v in &replies[..replies.len() - 1] {
        let h: HashMap<String, i64> = decode(v)?;
        for (k, n) in h {
            if let Some(i) = k.parse::<usize>().ok().filter(|i| (1..=steps.len()).contains(i)) {
                sessions[i - 1] += n;
            }
        }
    }
    let ratio = |a: i64, b: i64| if b > 0 { serde_json::json!((a as f64 / b as f64 * 10_000.0).round() / 10_000.0) } else { serde_json::Value::Null };
    let rows: Vec<serde_json::Value> = steps
        .iter()
        .enumerate()
        .map(|(i, goal)| {
            serde_json::json!({
                "step": i + 1,
                "goal": goal,
                "sessions": sessions[i],
                "users": users.get(&(i + 1).to_string()).copied().unwrap_or(0),
                "conversion": if i == 0 { serde_json::Value::Null } else { ratio(sessions[i], sessions[i - 1]) },
                "conversion_from_start": if i == 0 { serde_json::Value::Null } else { ratio(sessions[i], sessions[0]) },
            })
        })
        .collect();
    let mut body = range.describe();
    body["name"] = serde_json::json!(name);
    body["version"] = serde_json::json!(version);
    body["steps"] = serde_json::json!(rows);
    Ok(body)
}

/// `GET retention?granularity=week|day&from=&to=`: cohorts of users by the day (or ISO week)
/// they were first recorded, and how many of each were active in each following day (week)
/// up to `to`. Read as the days' bitmaps (two `GET`s per day, one pipeline) and combined here.
pub async fn retention(store: &RedisStore, query: Option<&str>) -> Result<serde_json::Value, QueryError> {
    let week = match param(query, "granularity").as_deref() {
        None | Some("week") => true,
        Some("day") => false,
        Some(_) => return Err(ApiError::BadParameter { parameter: "granularity", message: "must be \"week\" or \"day\"".into() }.into()),
    };
    if param(query, "period").is_some() || param(query, "date").is_some() {
        let parameter = if param(query, "period").is_some() { "period" } else { "date" };
        return Err(ApiError::BadParameter { parameter, message: "retention takes granularity, from and to".into() }.into());
    }
    let mut range = parse_range(query)?;
    if param(query, "from").is_none() && param(query, "to").is_none() {
        // Default: the last 8 weeks, or the last 14 days.
        let today = chrono::Utc::now().date_naive();
        let first = today - chrono::Duration::days(if week { 7 * 7 + today.weekday().num_days_from_monday() as i64 } else { 13 });
        range = parse_range(Some(&format!("from={first}&to={today}")))?;
    }
    let days = day_dates(&range);
    // Weeks start on Monday: the first cohort week is the one holding `from`.
    let slot_of = |d: chrono::NaiveDate| -> usize {
        let first = days[0] - chrono::Duration::days(if week { days[0].weekday().num_days_from_monday() as i64 } else { 0 });
        let n = (d - first).num_days() as usize;
        if week {
            n / 7
        } else {
            n
        }
    };
    let mut pipe = redis::pipe();
    for label in &range.labels {
        pipe.get(keys::new_users_bitmap(label)).get(keys::active_users_bitmap(label));
    }
    let replies: Vec<Option<Vec<u8>>> = store.pipeline(&pipe).await?;
    let slots = slot_of(*days.last().unwrap_or(&days[0])) + 1;
    let (mut new, mut active) = (vec![Vec::new(); slots], vec![Vec::new(); slots]);
    for (d, pair) in days.iter().zip(replies.chunks(2)) {
        let s = slot_of(*d);
        retention::or_into(&mut new[s], pair[0].as_deref().unwrap_or_default());
        retention::or_into(&mut active[s], pair.get(1).and_then(|b| b.as_deref()).unwrap_or_default());
    }
    let first_slot_date = days[0] - chrono::Duration::days(if week { days[0].weekday().num_days_from_monday() as i64 } else { 0 });
    let cohorts: Vec<serde_json::Value> = (0..slots)
        .map(|c| {
            let users = retention::count(&new[c]);
            let counts: Vec<u64> = (c..slots).map(|k| retention::and_count(&new[c], &active[k])).collect();
            let share: Vec<serde_json::Value> = counts
                .iter()
                .map(|a| if users > 0 { serde_json::json!((*a as f64 / users as f64 * 10_000.0).round() / 10_000.0) } else { serde_json::Value::Null })
                .collect();
            let start = first_slot_date + chrono::Duration::days(c as i64 * if week { 7 } else { 1 });
            serde_json::json!({"cohort": start.format("%Y-%m-%d").to_string(), "users": users, "active": counts, "share": share})
        })
        .collect();
    Ok(serde_json::json!({
        "granularity": if week { "week" } else { "day" },
        "from": range.from(),
        "to": range.to(),
        "cohorts": cohorts,
    }))
}

fn day_dates(range: &Range) -> Vec<chrono::NaiveDate> {
    range.labels.iter().filter_map(|l| chrono::NaiveDate::parse_from_str(l, "%Y-%m-%d").ok()).collect()
}
