//! The `[security]` section: which session anomaly detectors run, at what severity, and their
//! thresholds. Pure.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::config::secret::Secret;

/// Every detector, with its default severity. The analytics writer runs them (see
/// `capture::detect`); a severity of `off` disables one.
pub const DETECTORS: &[(&str, Severity)] = &[
    // The browser family or OS changed mid-session: a copied cookie.
    ("ua_change", Severity::High),
    // The client address prefix (/24, /48) changed mid-session.
    ("ip_change", Severity::Low),
    // The country changed mid-session.
    ("country_change", Severity::Medium),
    // Two points of one session imply more than `impossible_travel_kmh`.
    ("impossible_travel", Severity::High),
    // A browser (family + OS + device class) this user has not used before.
    ("new_device", Severity::Low),
    // A country this user has not been seen in before.
    ("new_country", Severity::Medium),
    // More than `max_concurrent_sessions` active sessions of one user.
    ("concurrent_sessions", Severity::Medium),
    // A session that had AAL2 is used at AAL1.
    ("aal_downgrade", Severity::High),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Low,
    Medium,
    High,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
        }
    }

    /// `low`, `medium`, `high`; `None` for anything else.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "low" => Some(Severity::Low),
            "medium" => Some(Severity::Medium),
            "high" => Some(Severity::High),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SecuritySection {
    /// Run the detectors at all (they need analytics).
    pub anomalies: bool,
    /// Speed (km/h) between two GeoIP points of one session above which travel is impossible.
    pub impossible_travel_kmh: f64,
    /// Points closer than this (km) never count as travel: GeoIP places one metro area's
    /// addresses at different points.
    pub travel_min_km: f64,
    /// Active sessions of one user above which `concurrent_sessions` fires.
    pub max_concurrent_sessions: u32,
    /// Anomalies kept per UTC day (the newest); the day's counters still count every one.
    pub max_anomalies_per_day: usize,
    /// Requests kept per signed-in session for its replay timeline (the newest); 0 = none.
    pub replay_max_entries: usize,
    /// Detector → `low` | `medium` | `high` | `off`; unlisted detectors keep their default.
    pub detectors: BTreeMap<String, String>,
    /// Detector → `alert` (the default: record and alert per the rules) or `revoke` (also revoke
    /// the session at once, on every instance).
    pub actions: BTreeMap<String, String>,
    /// `STING_WEBHOOK_SECRET`: the HMAC-SHA256 key that signs alert webhooks (header
    /// `X-Sting-Signature: t=<unix>,v1=<hex>`). Empty: webhooks go unsigned (warned).
    pub webhook_secret: Secret,
}

impl Default for SecuritySection {
    fn default() -> Self {
        Self {
            anomalies: true,
            impossible_travel_kmh: 1000.0,
            travel_min_km: 100.0,
            max_concurrent_sessions: 5,
            max_anomalies_per_day: 10_000,
            replay_max_entries: 500,
            detectors: BTreeMap::new(),
            actions: BTreeMap::new(),
            webhook_secret: Secret::default(),
        }
    }
}

impl SecuritySection {
    /// Each detector's severity, `None` when it is off (or anomalies are).
    pub fn severities(&self) -> Vec<(&'static str, Option<Severity>)> {
        DETECTORS
            .iter()
            .map(|(name, default)| {
                let set = self.detectors.get(*name).map(String::as_str);
                let sev = if !self.anomalies || set == Some("off") { None } else { set.and_then(Severity::parse).or(Some(*default)) };
                (*name, sev)
            })
            .collect()
    }

    /// The detectors whose anomalies revoke the session.
    pub fn revoking(&self) -> Vec<String> {
        self.actions.iter().filter(|(_, a)| a.as_str() == "revoke").map(|(d, _)| d.clone()).collect()
    }

    /// The first invalid setting: (key, message).
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        for (name, value) in &self.detectors {
            if !DETECTORS.iter().any(|(d, _)| d == name) {
                let known: Vec<&str> = DETECTORS.iter().map(|(d, _)| *d).collect();
                return Err(("security.detectors", format!("unknown detector {name:?}; detectors: {}", known.join(", "))));
            }
            if value != "off" && Severity::parse(value).is_none() {
                return Err(("security.detectors", format!("{name} = {value:?}: must be \"low\", \"medium\", \"high\" or \"off\"")));
            }
        }
        for (name, action) in &self.actions {
            if !DETECTORS.iter().any(|(d, _)| d == name) {
                return Err(("security.actions", format!("unknown detector {name:?}")));
            }
            if action != "alert" && action != "revoke" {
                return Err(("security.actions", format!("{name} = {action:?}: must be \"alert\" or \"revoke\"")));
            }
        }
        if !(self.impossible_travel_kmh.is_finite() && self.impossible_travel_kmh > 0.0) {
            return Err(("security.impossible_travel_kmh", "must be a positive number".into()));
        }
        if !(self.travel_min_km.is_finite() && self.travel_min_km >= 0.0) {
            return Err(("security.travel_min_km", "must be zero or more".into()));
        }
        if self.max_anomalies_per_day == 0 {
            return Err(("security.max_anomalies_per_day", "must be at least 1".into()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn severities_default_override_and_off() {
        let mut s = SecuritySection::default();
        s.detectors.insert("ip_change".into(), "off".into());
        s.detectors.insert("ua_change".into(), "medium".into());
        let sev: BTreeMap<_, _> = s.severities().into_iter().collect();
        assert_eq!(sev["ip_change"], None);
        assert_eq!(sev["ua_change"], Some(Severity::Medium));
        assert_eq!(sev["impossible_travel"], Some(Severity::High));
        s.anomalies = false;
        assert!(s.severities().iter().all(|(_, v)| v.is_none()));
    }

    #[test]
    fn bad_settings_name_the_key() {
        let mut s = SecuritySection::default();
        s.detectors.insert("telepathy".into(), "high".into());
        assert_eq!(s.validate().unwrap_err().0, "security.detectors");
        let mut s = SecuritySection::default();
        s.detectors.insert("ua_change".into(), "urgent".into());
        assert!(s.validate().unwrap_err().1.contains("ua_change"));
        let mut s = SecuritySection::default();
        s.actions.insert("ua_change".into(), "explode".into());
        assert_eq!(s.validate().unwrap_err().0, "security.actions");
        let s = SecuritySection { impossible_travel_kmh: -1.0, ..SecuritySection::default() };
        assert_eq!(s.validate().unwrap_err().0, "security.impossible_travel_kmh");
    }
}
