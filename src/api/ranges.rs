//! `from`/`to` date ranges for every read that takes `date`/`period`: inclusive, at most
//! `analytics.max_range_days` days (or that many days of hours), validated with 400s that name
//! the parameter. A range is the list of period labels whose hashes and sets a query sums in one
//! pipeline. Pure (parsing); the limit is installed once at start.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::api::endpoint::{param, parse_label, parse_period, ApiError};
use crate::store::keys::Period;

/// `analytics.max_range_days` as installed by [`install_max_range_days`]; 92 until then.
static MAX_RANGE_DAYS: AtomicU64 = AtomicU64::new(92);

/// Sets the longest range (days) the reads accept; the proxy and the ops CLI call it at start.
pub fn install_max_range_days(days: u64) {
    MAX_RANGE_DAYS.store(days.max(1), Ordering::Relaxed);
}

pub fn max_range_days() -> u64 {
    MAX_RANGE_DAYS.load(Ordering::Relaxed)
}

/// The periods a read covers, oldest first (one label for a plain `date`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Range {
    pub period: Period,
    pub labels: Vec<String>,
}

impl Range {
    pub fn from(&self) -> &str {
        self.labels.first().map(String::as_str).unwrap_or_default()
    }

    pub fn to(&self) -> &str {
        self.labels.last().map(String::as_str).unwrap_or_default()
    }

    /// `"period"`, `"date"` (the first label, as before ranges), `"from"` and `"to"`.
    pub fn describe(&self) -> serde_json::Value {
        let period = match self.period {
            Period::Day => "day",
            Period::Hour => "hour",
        };
        serde_json::json!({"period": period, "date": self.from(), "from": self.from(), "to": self.to()})
    }
}

fn shape(period: Period) -> &'static str {
    match period {
        Period::Day => "YYYY-MM-DD",
        Period::Hour => "YYYY-MM-DDTHH",
    }
}

/// `period`, then either `date` (one period, default now) or `from`/`to` (inclusive; a missing
/// `to` is now, a missing `from` is `to`). `date` together with `from`/`to` is refused.
pub fn parse_range(query: Option<&str>) -> Result<Range, ApiError> {
    parse_range_at(query, chrono::Utc::now(), max_range_days())
}

/// [`parse_range`] at a given time and limit.
pub fn parse_range_at(query: Option<&str>, now: chrono::DateTime<chrono::Utc>, max_days: u64) -> Result<Range, ApiError> {
    let (from, to) = (param(query, "from"), param(query, "to"));
    if from.is_none() && to.is_none() {
        let (period, label) = parse_period(query)?;
        return Ok(Range { period, labels: vec![label] });
    }
    let (period, _) = parse_period(query.map(strip_date).as_deref())?;
    if param(query, "date").is_some() {
        return Err(ApiError::BadParameter { parameter: "date", message: "give either date or from/to, not both".into() });
    }
    let parse = |name: &'static str, v: &str| {
        parse_label(period, v).ok_or_else(|| ApiError::BadParameter { parameter: name, message: format!("must be {} (UTC)", shape(period)) })
    };
    let to = match &to {
        Some(v) => parse("to", v)?,
        None => parse("to", &period.label(now.timestamp_millis()))?,
    };
    let from = match &from {
        Some(v) => parse("from", v)?,
        None => to,
    };
    if from > to {
        return Err(ApiError::BadParameter { parameter: "from", message: "must not be after `to`".into() });
    }
    let (step, max) = match period {
        Period::Day => (chrono::Duration::days(1), max_days as i64),
        Period::Hour => (chrono::Duration::hours(1), max_days as i64 * 24),
    };
    let count = (to - from).num_seconds() / step.num_seconds() + 1;
    if count > max {
        return Err(ApiError::BadParameter { parameter: "to", message: format!("the range from `from` to `to` is longer than {max_days} days") });
    }
    let labels = (0..count).map(|i| period.label((from + step * i as i32).timestamp_millis())).collect();
    Ok(Range { period, labels })
}

/// Sorted sets of several periods summed by member, the `limit` largest first (ties: the
/// greater member first, as `ZREVRANGE` orders them).
pub fn top_summed(sets: Vec<Vec<(String, f64)>>, limit: usize) -> Vec<(String, f64)> {
    if sets.len() == 1 {
        return sets.into_iter().next().unwrap_or_default().into_iter().take(limit).collect();
    }
    let mut sum: HashMap<String, f64> = HashMap::new();
    for (m, n) in sets.into_iter().flatten() {
        *sum.entry(m).or_insert(0.0) += n;
    }
    let mut rows: Vec<(String, f64)> = sum.into_iter().collect();
    rows.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| b.0.cmp(&a.0)));
    rows.truncate(limit);
    rows
}

/// The query without its `date` parameter (so `period` is checked on its own).
fn strip_date(q: &str) -> String {
    q.split('&').filter(|p| !p.starts_with("date=") && *p != "date").collect::<Vec<_>>().join("&")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(q: &str) -> Result<Range, ApiError> {
        parse_range_at(Some(q), chrono::DateTime::parse_from_rfc3339("2026-12-04T10:00:00Z").unwrap().to_utc(), 92)
    }

    fn bad(q: &str) -> &'static str {
        match at(q) {
            Err(ApiError::BadParameter { parameter, .. }) => parameter,
            other => panic!("{q}: {other:?}"),
        }
    }

    #[test]
    fn ranges_across_month_and_year_ends() {
        assert_eq!(at("from=2026-10-30&to=2026-11-02").unwrap().labels, ["2026-10-30", "2026-10-31", "2026-11-01", "2026-11-02"]);
        assert_eq!(at("from=2024-02-28&to=2024-03-01").unwrap().labels, ["2024-02-28", "2024-02-29", "2024-03-01"], "a leap day");
        assert_eq!(at("from=2025-12-31&to=2026-01-01").unwrap().labels.len(), 2);
        assert_eq!(at("period=hour&from=2026-11-30T23&to=2026-12-01T01").unwrap().labels, ["2026-11-30T23", "2026-12-01T00", "2026-12-01T01"]);
        assert_eq!(at("from=2026-12-01").unwrap().labels, ["2026-12-01", "2026-12-02", "2026-12-03", "2026-12-04"], "to defaults to now");
        assert_eq!(at("to=2026-11-30").unwrap().labels, ["2026-11-30"]);
        assert_eq!(at("date=2026-11-30").unwrap().labels, ["2026-11-30"]);
        assert_eq!(at("from=2026-09-04&to=2026-12-04").unwrap().labels.len(), 92);
    }

    #[test]
    fn bad_ranges_name_the_parameter() {
        assert_eq!(bad("from=2026-12-05&to=2026-12-04"), "from");
        assert_eq!(bad("from=2026-09-03&to=2026-12-04"), "to");
        assert_eq!(bad("from=2026-13-01"), "from");
        assert_eq!(bad("to=yesterday"), "to");
        assert_eq!(bad("from=2026-11-01&date=2026-11-02"), "date");
        assert_eq!(bad("period=hour&from=2026-11-01"), "from");
        assert_eq!(bad("period=week&from=2026-11-01"), "period");
    }
}
