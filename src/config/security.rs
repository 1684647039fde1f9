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
    // One session used from more than `max_addresses_per_session` address prefixes within
    // `address_window_minutes`: a cookie shared or replayed from many places.
    ("many_addresses", Severity::High),
    // At least `auth_failure_threshold` different invalid credentials (bad cookie signatures,
    // credentials Kratos refuses, revoked sessions) from one address within
    // `auth_failure_window_seconds`: forgery or credential stuffing.
    ("auth_failure_burst", Severity::High),
];

/// Detectors about an address rather than a session: no session to revoke or step up.
pub const ADDRESS_DETECTORS: &[&str] = &["auth_failure_burst"];

/// What `security.actions` may say for a detector.
pub const ACTIONS: &[&str] = &["alert", "revoke", "step_up"];

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
    /// Address prefixes one session may be used from within `address_window_minutes` before
    /// `many_addresses` fires.
    pub max_addresses_per_session: u32,
    pub address_window_minutes: u32,
    /// Different invalid credentials from one address within `auth_failure_window_seconds` at
    /// which `auth_failure_burst` fires.
    pub auth_failure_threshold: u32,
    pub auth_failure_window_seconds: u32,
    /// Anomalies kept per UTC day (the newest); the day's counters still count every one.
    pub max_anomalies_per_day: usize,
    /// Requests kept per signed-in session for its replay timeline (the newest); 0 = none.
    pub replay_max_entries: usize,
    /// Detector → `low` | `medium` | `high` | `off`; unlisted detectors keep their default.
    pub detectors: BTreeMap<String, String>,
    /// Detector → `alert` (the default: record and alert per the rules), `revoke` (also revoke
    /// the session at once, on every instance) or `step_up` (the session must authenticate
    /// again with a second factor through Kratos before it is honoured again; needs
    /// `kratos.public_url`).
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
            max_addresses_per_session: 3,
            address_window_minutes: 10,
            auth_failure_threshold: 20,
            auth_failure_window_seconds: 60,
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
        self.with_action("revoke")
    }

    /// The detectors whose anomalies make the session step up to AAL2.
    pub fn stepping_up(&self) -> Vec<String> {
        self.with_action("step_up")
    }

    fn with_action(&self, action: &str) -> Vec<String> {
        self.actions.iter().filter(|(_, a)| a.as_str() == action).map(|(d, _)| d.clone()).collect()
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
            if !ACTIONS.contains(&action.as_str()) {
                return Err(("security.actions", format!("{name} = {action:?}: must be \"alert\", \"revoke\" or \"step_up\"")));
            }
            if action != "alert" && ADDRESS_DETECTORS.contains(&name.as_str()) {
                return Err(("security.actions", format!("{name} = {action:?}: {name} is about an address, not a session; only \"alert\"")));
            }
        }
        if !(self.impossible_travel_kmh.is_finite() && self.impossible_travel_kmh > 0.0) {
            return Err(("security.impossible_travel_kmh", "must be a positive number".into()));
        }
        if !(self.travel_min_km.is_finite() && self.travel_min_km >= 0.0) {
            return Err(("security.travel_min_km", "must be zero or more".into()));
        }
        for (key, v) in [
            ("security.max_addresses_per_session", self.max_addresses_per_session),
            ("security.address_window_minutes", self.address_window_minutes),
            ("security.auth_failure_threshold", self.auth_failure_threshold),
            ("security.auth_failure_window_seconds", self.auth_failure_window_seconds),
        ] {
            if v == 0 {
                return Err((key, "must be at least 1".into()));
            }
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
        let mut s = SecuritySection::default();
        s.actions.insert("auth_failure_burst".into(), "revoke".into());
        assert!(s.validate().unwrap_err().1.contains("about an address"));
        let mut s = SecuritySection::default();
        s.actions.insert("ua_change".into(), "step_up".into());
        assert_eq!(s.validate(), Ok(()));
        assert_eq!(s.stepping_up(), vec!["ua_change".to_owned()]);
        let s = SecuritySection { auth_failure_threshold: 0, ..SecuritySection::default() };
        assert_eq!(s.validate().unwrap_err().0, "security.auth_failure_threshold");
        let s = SecuritySection { impossible_travel_kmh: -1.0, ..SecuritySection::default() };
        assert_eq!(s.validate().unwrap_err().0, "security.impossible_travel_kmh");
    }
}
