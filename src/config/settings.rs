//! Configuration: one TOML file, overridden by environment variables, validated once at start-up
//! into [`Config`]. Reads the file and the environment; no other I/O.
//!
//! Precedence is environment over file over defaults. Every error names the key and where the
//! bad value came from (the file path or the variable), so an operator can fix it in one go.
//! Secrets are wrapped in [`Secret`], whose `Debug` never prints the value.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use serde::Deserialize;

use crate::config::privacy::IpMode;
use crate::config::redis_target::{self, RedisTarget};
use crate::config::rules::{Requirement, Rule};
use crate::config::secret::Secret;
use crate::config::security::SecuritySection;

/// Where a setting came from; quoted in every error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    File(PathBuf),
    Env(&'static str),
    Default,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::File(p) => write!(f, "file {}", p.display()),
            Source::Env(v) => write!(f, "environment variable {v}"),
            Source::Default => write!(f, "built-in default"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {err}")]
    Read { path: PathBuf, err: std::io::Error },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid `{key}` (from {origin}): {message}")]
    Invalid { key: &'static str, origin: Source, message: String },
}

// ---------------------------------------------------------------------------------------------
// The file, as written. Every table denies unknown keys; every field has a default.
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct FileConfig {
    server: ServerSection,
    upstream: UpstreamSection,
    redis: RedisSection,
    session: SessionSection,
    kratos: KratosSection,
    auth: AuthSection,
    analytics: AnalyticsSection,
    security: SecuritySection,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSection {
    /// Public listener (`STING_LISTEN`).
    pub listen: String,
    /// Health and metrics listener (`STING_ADMIN_LISTEN`); keep it off the public network.
    pub admin_listen: String,
    /// Worker threads of the proxy service.
    pub threads: usize,
    /// A CPU (0-based) for the analytics writer's thread alone (`STING_ANALYTICS_CPU`); unset,
    /// the OS schedules it anywhere. Always a thread apart from the proxy's workers.
    pub analytics_cpu: Option<usize>,
    pub work_stealing: bool,
    /// Seconds between SIGTERM and the final shutdown step (in-flight requests finish meanwhile).
    pub grace_period_seconds: u64,
    pub graceful_shutdown_timeout_seconds: u64,
    /// Unix socket through which a new process takes over the listeners (`--upgrade`). Empty:
    /// `upgrade.sock` in the private runtime directory (see `config::runtime_dir`). A socket in
    /// a world-writable directory is refused.
    pub upgrade_sock: String,
    /// Empty: `sting-proxy.pid` in the private runtime directory.
    pub pid_file: String,
    /// Accept cleartext HTTP/2 (h2c prior knowledge) on the public listener as well as HTTP/1.1.
    pub h2c: bool,
    /// CIDRs of load balancers whose `X-Forwarded-For` we believe (`STING_TRUSTED_PROXIES`).
    pub trusted_proxies: Vec<String>,
    /// Distinct route templates used as metric labels; later ones are counted as `other`.
    pub metrics_max_routes: usize,
    /// Access log format: `json`, `combined` (Apache/nginx, user id in `%u`) or `off`.
    pub access_log: String,
    /// Access log file (reopened on SIGHUP, for logrotate); empty = stdout.
    pub access_log_path: String,
    /// How the access log shows client addresses (`full`, `truncated`, `hashed`, `none`);
    /// unset = `analytics.ip_mode`.
    pub access_log_ip: Option<IpMode>,
}

impl Default for ServerSection {
    fn default() -> Self {
        Self {
            listen: "0.0.0.0:8080".into(),
            admin_listen: "127.0.0.1:9091".into(),
            threads: 2,
            analytics_cpu: None,
            work_stealing: true,
            grace_period_seconds: 5,
            graceful_shutdown_timeout_seconds: 5,
            upgrade_sock: String::new(),
            pid_file: String::new(),
            h2c: false,
            trusted_proxies: Vec::new(),
            metrics_max_routes: crate::observe::metrics::DEFAULT_ROUTE_CAP,
            access_log: "json".into(),
            access_log_path: String::new(),
            access_log_ip: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamSection {
    /// The app (`STING_UPSTREAM`), `http://host:port`.
    pub url: String,
    pub connect_timeout_ms: u64,
    /// Longest wait for the app between two reads; slow endpoints need more.
    pub read_timeout_ms: u64,
    pub write_timeout_ms: u64,
    /// Idle keep-alive connections to the app are closed after this long.
    pub idle_timeout_seconds: u64,
    /// Idle connections kept per worker pool.
    pub keepalive_pool_size: usize,
}

impl Default for UpstreamSection {
    fn default() -> Self {
        Self {
            url: "http://127.0.0.1:5000".into(),
            connect_timeout_ms: 2_000,
            read_timeout_ms: 60_000,
            write_timeout_ms: 60_000,
            idle_timeout_seconds: 60,
            keepalive_pool_size: 128,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedisSection {
    /// `REDIS_MODE`: `standalone`, `cluster` or `sentinel`; empty, inferred from `url`'s form
    /// (see [`crate::config::redis_target`]).
    pub mode: String,
    /// `REDIS_URL`: one URL, cluster seeds, or `redis+sentinel://…/master`; may carry a
    /// password, so it is treated as a secret.
    pub url: Secret,
    pub connect_timeout_ms: u64,
    /// Per-command deadline on the request path; a slow Redis must not become a slow proxy.
    pub command_timeout_ms: u64,
}

impl Default for RedisSection {
    fn default() -> Self {
        Self { mode: String::new(), url: Secret::new("redis://127.0.0.1:6379/0"), connect_timeout_ms: 1_000, command_timeout_ms: 250 }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SessionSection {
    /// Flask's `SECRET_KEY` (`SESSION_SECRET_KEY`). Required when `use_signer` is true.
    pub secret_key: Secret,
    /// Older secrets still accepted during a rotation (`SESSION_SECRET_KEY_FALLBACKS`, comma-separated).
    pub secret_key_fallbacks: Vec<Secret>,
    /// Flask-Session's `SESSION_USE_SIGNER` (`SESSION_USE_SIGNER`).
    pub use_signer: bool,
    /// Start even though `use_signer` is false. Unsigned, the cookie value is the sid and so the
    /// login credential: the proxy then publishes only a keyed hash of it (keyed by
    /// `secret_key`, which stays required) and refuses to start without this acknowledgement.
    pub allow_unsigned: bool,
    /// `SESSION_KEY_PREFIX`: the app's Redis key is this + the sid.
    pub key_prefix: String,
    /// `SESSION_COOKIE_NAME`.
    pub cookie_name: String,
    /// `SESSION_LIFETIME_HOURS`: the app's `PERMANENT_SESSION_LIFETIME`; bounds analytics records.
    pub lifetime_hours: u64,
    pub user_id_field: String,
    pub email_field: String,
    pub role_field: String,
    /// In-process identity cache lifetime; 0 disables it (every request reads Redis).
    pub cache_ttl_seconds: u64,
    pub cache_capacity: u64,
    /// Stored values larger than this are refused (counted, treated as anonymous).
    pub max_value_bytes: usize,
}

impl SessionSection {
    /// The app's session lifetime in seconds: the longest a record without a user lives.
    pub fn lifetime_secs(&self) -> u64 {
        self.lifetime_hours * 3600
    }

    /// The app's key prefix when a published sid names the app's key (signed cookies); `None`
    /// when published sids are keyed hashes of the real one (unsigned cookies).
    pub fn app_key_prefix_of_published(&self) -> Option<&str> {
        self.use_signer.then_some(self.key_prefix.as_str())
    }
}

impl Default for SessionSection {
    fn default() -> Self {
        Self {
            secret_key: Secret::default(),
            secret_key_fallbacks: Vec::new(),
            use_signer: true,
            allow_unsigned: false,
            key_prefix: "sting:session:".into(),
            cookie_name: "session".into(),
            lifetime_hours: 24,
            user_id_field: "user_id".into(),
            email_field: "email".into(),
            role_field: "role".into(),
            cache_ttl_seconds: 5,
            cache_capacity: 100_000,
            max_value_bytes: 64 * 1024,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KratosSection {
    /// `KRATOS_PUBLIC_URL`; empty disables the Kratos fallback.
    pub public_url: String,
    /// `KRATOS_ADMIN_URL`: Kratos's admin API, used only to revoke sessions (revocation through
    /// the analytics API also revokes the Kratos session there). Empty: the proxy still refuses
    /// revoked sessions itself, but Kratos keeps honouring them elsewhere.
    pub admin_url: String,
    pub cookie_name: String,
    pub timeout_ms: u64,
    /// Upper bound for caching a whoami answer; the session's own `expires_at` may cut it shorter.
    pub cache_ttl_seconds: u64,
    /// How long "no valid session" (401) and "needs second factor" (403) answers are reused.
    pub negative_cache_ttl_seconds: u64,
    /// Consecutive failures (timeouts, 5xx) that open the circuit. Kratos's own 429 does not
    /// count: Kratos is up and asking us to slow down.
    pub circuit_failure_threshold: u32,
    /// While open, misses are anonymous without calling Kratos; then one probe call is let through.
    pub circuit_open_seconds: u64,
    /// The `metadata_public` key (admin-written) that holds the role.
    pub role_trait: String,
    /// Also read the role from `traits[role_trait]` when `metadata_public` has none. Users edit
    /// their own traits, so this lets any user pick their role: `check` and start-up warn.
    pub role_from_traits: bool,
    /// Send `Authorization: Bearer` values to whoami as Kratos session tokens. Off by default:
    /// the app's own API tokens would otherwise all reach Kratos (and its logs).
    pub bearer_tokens: bool,
    /// Uncached whoami lookups one client address (IPv6: its /64) may cause per minute, with a
    /// burst of as many; beyond it its unknown credentials are anonymous. 0 = no limit.
    pub lookups_per_client_per_minute: u32,
}

impl Default for KratosSection {
    fn default() -> Self {
        Self {
            public_url: String::new(),
            admin_url: String::new(),
            cookie_name: "ory_kratos_session".into(),
            timeout_ms: 1_000,
            cache_ttl_seconds: 300,
            negative_cache_ttl_seconds: 5,
            circuit_failure_threshold: 5,
            circuit_open_seconds: 10,
            role_trait: "role".into(),
            role_from_traits: false,
            bearer_tokens: false,
            lookups_per_client_per_minute: 120,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthSection {
    /// Where browsers without a session are sent (`STING_LOGIN_URL`).
    pub login_url: String,
    /// Query parameter carrying the original URL back from the login page.
    pub return_to_param: String,
    /// Status for a protected route when the session store cannot be asked (Redis down).
    pub store_down_status: u16,
    /// Ordered path-prefix rules; first match wins; no match = public.
    pub rules: Vec<RuleSection>,
}

impl Default for AuthSection {
    fn default() -> Self {
        Self { login_url: "/login".into(), return_to_param: "next".into(), store_down_status: 503, rules: Vec::new() }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSection {
    pub prefix: String,
    /// `public`, `session` or `role`.
    pub require: String,
    #[serde(default)]
    pub roles: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AnalyticsSection {
    /// `ANALYTICS_ENABLED`.
    pub enabled: bool,
    /// `ANALYTICS_RETENTION_DAYS`: TTL of every analytics key.
    pub retention_days: u64,
    /// `GEOIP_DATABASE`: a MaxMind-format `.mmdb` (GeoLite2-City or compatible); empty = no geo.
    pub geoip_database: String,
    /// `GEOIP_ASN_DATABASE`: a MaxMind-format ASN `.mmdb` (GeoLite2-ASN or compatible); empty =
    /// no ASN in the session fingerprint.
    pub asn_database: String,
    /// Events waiting for the writer; when full, new events are dropped and counted.
    pub queue_capacity: usize,
    /// A batch is written when it holds this many events ...
    pub batch_max_events: usize,
    /// ... or when its first event is this old.
    pub batch_max_delay_ms: u64,
    /// Sessions written per Redis transaction: a batch with more is written as several
    /// transactions, one after another, so that no `MULTI`/`EXEC` holds Redis (and the request
    /// path's session lookups behind it) for long.
    pub batch_max_sessions: usize,
    /// Recent actions kept per session.
    pub max_actions_per_session: usize,
    /// Distinct route templates recorded per UTC day (top pages, per-session page sets); later
    /// new ones count as `other`. Per proxy process.
    pub max_pages_per_day: usize,
    /// New anonymous session records one client address (IPv6: its /64) may create per minute,
    /// with a burst of as many; beyond it its requests count in the totals but start no session
    /// record (`sting_analytics_sessions_refused_total`). Sessions with a user are never
    /// refused. 0 = no limit.
    pub new_sessions_per_client_per_minute: u32,
    /// Sessions without activity for this long are ended by the sweep.
    pub idle_timeout_seconds: u64,
    /// How often the sweep looks for sessions whose app key is gone or that went idle.
    pub sweep_interval_seconds: u64,
    /// Listen for Redis keyspace notifications to see session expiry at once (needs
    /// `notify-keyspace-events` with `Egx`; the sweep covers it otherwise).
    pub keyspace_notifications: bool,
    /// Operator route templates (`/files/:name`), tried before the automatic id detection.
    pub route_templates: Vec<String>,
    /// File extensions counted as static assets (hits, never page views).
    pub asset_extensions: Vec<String>,
    /// Path prefixes counted as static assets.
    pub asset_prefixes: Vec<String>,
    /// Named actions: method + route template → name.
    pub actions: Vec<ActionRuleSection>,
    /// Where the analytics REST API is served (never forwarded to the app).
    pub api_prefix: String,
    /// Where the live dashboard is served (never forwarded to the app); empty disables it.
    pub dashboard_path: String,
    /// Roles whose sessions may read the API.
    pub admin_roles: Vec<String>,
    /// `STING_ANALYTICS_TOKEN` (comma-separated): bearer tokens that may read the API.
    pub api_tokens: Vec<Secret>,
    /// Browser origins allowed to call the API cross-origin (same origin always is).
    pub allowed_origins: Vec<String>,
    /// `ANALYTICS_ENCRYPTION_KEYS` (comma-separated, newest first): Fernet keys
    /// (`Fernet.generate_key()`) that encrypt `encrypted_fields` at rest; empty = plaintext.
    pub encryption_keys: Vec<Secret>,
    /// Personal fields stored as Fernet tokens when keys are set: `email`, `ip_address`,
    /// `user_agent`, `city`.
    pub encrypted_fields: Vec<String>,
    /// `ANALYTICS_IP_MODE`: `full`, `truncated`, `hashed` or `none`.
    pub ip_mode: IpMode,
    /// Requests with `Sec-GPC: 1` (Global Privacy Control) count in aggregates only: no
    /// address, device, timeline or detector state for their session.
    pub honor_gpc: bool,
    /// The same for `DNT: 1` (Do Not Track).
    pub honor_dnt: bool,
    /// Longest `from`..`to` range (inclusive days) a read endpoint accepts.
    pub max_range_days: u64,
    /// Distinct values per acquisition dimension (referrer domain, `utm_source`, `utm_medium`,
    /// `utm_campaign`) recorded per UTC day; later new ones count as `other`. Per process.
    pub max_acquisition_values_per_day: usize,
    /// Count the source of every page view of a session, not only of its first.
    pub acquisition_all_navigations: bool,
    /// Funnels: ordered goals (route templates or action names) counted per session in order.
    pub funnels: Vec<FunnelSection>,
    /// Most funnels (configured and defined through the API together).
    pub max_funnels: usize,
    /// Most steps in one funnel.
    pub max_funnel_steps: usize,
}

impl Default for AnalyticsSection {
    fn default() -> Self {
        let assets = crate::config::route_template::AssetRules::default();
        Self {
            enabled: true,
            retention_days: 30,
            geoip_database: String::new(),
            asn_database: String::new(),
            queue_capacity: 65_536,
            batch_max_events: 1_000,
            batch_max_sessions: 100,
            batch_max_delay_ms: 50,
            max_actions_per_session: 100,
            max_pages_per_day: 1_000,
            new_sessions_per_client_per_minute: 60,
            idle_timeout_seconds: 1800,
            sweep_interval_seconds: 60,
            keyspace_notifications: true,
            route_templates: Vec::new(),
            asset_extensions: assets.extensions,
            asset_prefixes: assets.prefixes,
            actions: Vec::new(),
            api_prefix: "/api/analytics/".into(),
            dashboard_path: "/analytics/".into(),
            admin_roles: vec!["admin".into()],
            api_tokens: Vec::new(),
            allowed_origins: Vec::new(),
            encryption_keys: Vec::new(),
            encrypted_fields: crate::config::privacy::default_encrypted_fields(),
            ip_mode: IpMode::Full,
            honor_gpc: true,
            honor_dnt: false,
            max_range_days: 92,
            max_acquisition_values_per_day: 100,
            acquisition_all_navigations: false,
            funnels: Vec::new(),
            max_funnels: 20,
            max_funnel_steps: 10,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionRuleSection {
    /// HTTP method, or `*` for any.
    pub method: String,
    /// A route template as the analytics see it (`/documents/:id`).
    pub route: String,
    pub name: String,
}

/// One `[[analytics.funnels]]`: a name (`[a-z0-9_-]`, at most 64) and its ordered steps, each a
/// route template (`/signup`) or the name of a `[[analytics.actions]]` rule.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct FunnelSection {
    pub name: String,
    pub steps: Vec<String>,
}

// ---------------------------------------------------------------------------------------------
// The validated configuration the rest of the program uses.
// ---------------------------------------------------------------------------------------------

/// Everything the proxy needs, checked. Cheap to clone into services (a few strings).
#[derive(Debug, Clone)]
pub struct Config {
    pub server: ServerSection,
    pub listen: SocketAddr,
    pub admin_listen: SocketAddr,
    pub trusted_proxies: Vec<IpNet>,
    pub upstream: UpstreamSection,
    pub upstream_addr: String,
    pub upstream_host: String,
    pub redis: RedisSection,
    /// `redis.mode` and `redis.url`, parsed.
    pub redis_target: RedisTarget,
    pub session: SessionSection,
    pub kratos: KratosSection,
    pub auth: AuthSection,
    pub rules: Vec<Rule>,
    /// `STING_REQUIRE_AUTH` set the rules (merged with the file's role rules).
    pub rules_from_env: bool,
    pub analytics: AnalyticsSection,
    pub security: SecuritySection,
    /// The file this came from, if any (for messages).
    pub file: Option<PathBuf>,
}

impl Config {
    /// How long a revoked session stays refused: longer than any session or analytics record
    /// about it lives.
    pub fn revocation_keep(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.session.lifetime_secs().max(self.analytics.retention_days * 86_400))
    }

    /// Settings that run but weaken what the proxy guarantees; `check` prints them and start-up
    /// logs them as warnings.
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.security.anomalies && self.security.webhook_secret.expose().is_empty() {
            out.push(
                "security.webhook_secret is empty: alert webhooks (if any rule sets one) are sent unsigned; set STING_WEBHOOK_SECRET so receivers can verify them".into(),
            );
        }
        if self.kratos.role_from_traits {
            out.push(
                "kratos.role_from_traits = true: roles are read from identity traits, which every user edits in Kratos's settings flow; \
                 any user can give themselves a role. Put roles in metadata_public (admin API) instead."
                    .to_owned(),
            );
        }
        if !self.session.use_signer {
            out.push(
                "session.use_signer = false (allowed by session.allow_unsigned): the app's cookie is the bare sid, a bearer credential; \
                 the proxy publishes only keyed hashes of sids, but anyone who reads a cookie can replay it."
                    .to_owned(),
            );
        }
        if self.kratos.bearer_tokens && !self.kratos.public_url.is_empty() {
            out.push("kratos.bearer_tokens = true: every `Authorization: Bearer` value sent to the app is also sent to Kratos's whoami.".to_owned());
        }
        if self.rules_from_env {
            let kept: Vec<&str> = self.rules.iter().filter(|r| matches!(r.requirement(), Requirement::Role(_))).map(|r| r.prefix()).collect();
            out.push(format!(
                "STING_REQUIRE_AUTH replaces the file's public and session rules; role rules kept first: {}",
                if kept.is_empty() { "none".to_owned() } else { kept.join(", ") }
            ));
        }
        out
    }
}

/// Environment variables we read, in one place (the README's table lists the same).
pub mod env {
    pub const REDIS_URL: &str = "REDIS_URL";
    pub const REDIS_MODE: &str = "REDIS_MODE";
    pub const SESSION_SECRET_KEY: &str = "SESSION_SECRET_KEY";
    pub const SESSION_SECRET_KEY_FALLBACKS: &str = "SESSION_SECRET_KEY_FALLBACKS";
    pub const SESSION_USE_SIGNER: &str = "SESSION_USE_SIGNER";
    pub const SESSION_KEY_PREFIX: &str = "SESSION_KEY_PREFIX";
    pub const SESSION_COOKIE_NAME: &str = "SESSION_COOKIE_NAME";
    pub const SESSION_LIFETIME_HOURS: &str = "SESSION_LIFETIME_HOURS";
    pub const ANALYTICS_ENABLED: &str = "ANALYTICS_ENABLED";
    pub const ANALYTICS_RETENTION_DAYS: &str = "ANALYTICS_RETENTION_DAYS";
    pub const STING_LISTEN: &str = "STING_LISTEN";
    pub const STING_ADMIN_LISTEN: &str = "STING_ADMIN_LISTEN";
    pub const STING_UPSTREAM: &str = "STING_UPSTREAM";
    pub const KRATOS_PUBLIC_URL: &str = "KRATOS_PUBLIC_URL";
    pub const KRATOS_ADMIN_URL: &str = "KRATOS_ADMIN_URL";
    pub const STING_WEBHOOK_SECRET: &str = "STING_WEBHOOK_SECRET";
    pub const STING_TRUSTED_PROXIES: &str = "STING_TRUSTED_PROXIES";
    pub const STING_REQUIRE_AUTH: &str = "STING_REQUIRE_AUTH";
    pub const STING_LOGIN_URL: &str = "STING_LOGIN_URL";
    pub const STING_THREADS: &str = "STING_THREADS";
    pub const STING_ANALYTICS_CPU: &str = "STING_ANALYTICS_CPU";
    pub const STING_GRACE_PERIOD_SECONDS: &str = "STING_GRACE_PERIOD_SECONDS";
    pub const STING_SESSION_CACHE_TTL_SECONDS: &str = "STING_SESSION_CACHE_TTL_SECONDS";
    pub const GEOIP_DATABASE: &str = "GEOIP_DATABASE";
    pub const GEOIP_ASN_DATABASE: &str = "GEOIP_ASN_DATABASE";
    pub const STING_ANALYTICS_TOKEN: &str = "STING_ANALYTICS_TOKEN";
    pub const ANALYTICS_ENCRYPTION_KEYS: &str = "ANALYTICS_ENCRYPTION_KEYS";
    pub const ANALYTICS_IP_MODE: &str = "ANALYTICS_IP_MODE";
}

impl Config {
    /// Loads `path` (if given), applies the process environment, validates.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        Self::load_with_env(path, |k| std::env::var(k).ok())
    }

    /// As [`Config::load`], with the environment supplied by the caller (tests).
    pub fn load_with_env(path: Option<&Path>, env: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let file = match path {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|err| ConfigError::Read { path: p.into(), err })?;
                toml::from_str::<FileConfig>(&text).map_err(|e| ConfigError::Parse { path: p.into(), message: e.to_string() })?
            }
            None => FileConfig::default(),
        };
        let file_source = path.map(|p| Source::File(p.to_path_buf())).unwrap_or(Source::Default);
        Builder { file, file_source, env: &env }.build(path)
    }
}

struct Builder<'a, E: Fn(&str) -> Option<String>> {
    file: FileConfig,
    file_source: Source,
    env: &'a E,
}

impl<E: Fn(&str) -> Option<String>> Builder<'_, E> {
    /// Applies one environment override, parsing it with `parse`; returns the source in force.
    fn over<T>(&self, var: &'static str, key: &'static str, slot: &mut T, parse: impl Fn(&str) -> Result<T, String>) -> Result<Source, ConfigError> {
        match (self.env)(var) {
            Some(raw) => {
                *slot = parse(raw.trim()).map_err(|message| ConfigError::Invalid { key, origin: Source::Env(var), message })?;
                Ok(Source::Env(var))
            }
            None => Ok(self.file_source.clone()),
        }
    }

    fn build(mut self, path: Option<&Path>) -> Result<Config, ConfigError> {
        use env::*;
        let mut f = std::mem::take(&mut self.file);
        let s_listen = self.over(STING_LISTEN, "server.listen", &mut f.server.listen, text)?;
        let s_admin = self.over(STING_ADMIN_LISTEN, "server.admin_listen", &mut f.server.admin_listen, text)?;
        self.over(STING_THREADS, "server.threads", &mut f.server.threads, number)?;
        let s_cpu = self.over(STING_ANALYTICS_CPU, "server.analytics_cpu", &mut f.server.analytics_cpu, |v| number(v).map(Some))?;
        self.over(STING_GRACE_PERIOD_SECONDS, "server.grace_period_seconds", &mut f.server.grace_period_seconds, number)?;
        let s_trusted = self.over(STING_TRUSTED_PROXIES, "server.trusted_proxies", &mut f.server.trusted_proxies, list)?;
        let s_upstream = self.over(STING_UPSTREAM, "upstream.url", &mut f.upstream.url, text)?;
        let s_redis = self.over(REDIS_URL, "redis.url", &mut f.redis.url, |v| Ok(Secret::new(v)))?;
        let s_mode = self.over(REDIS_MODE, "redis.mode", &mut f.redis.mode, text)?;
        let s_secret = self.over(SESSION_SECRET_KEY, "session.secret_key", &mut f.session.secret_key, |v| Ok(Secret::new(v)))?;
        self.over(SESSION_SECRET_KEY_FALLBACKS, "session.secret_key_fallbacks", &mut f.session.secret_key_fallbacks, |v| {
            list(v).map(|l| l.into_iter().map(Secret::new).collect())
        })?;
        let s_signer = self.over(SESSION_USE_SIGNER, "session.use_signer", &mut f.session.use_signer, boolean)?;
        let s_prefix = self.over(SESSION_KEY_PREFIX, "session.key_prefix", &mut f.session.key_prefix, text)?;
        let s_cookie = self.over(SESSION_COOKIE_NAME, "session.cookie_name", &mut f.session.cookie_name, text)?;
        let s_life = self.over(SESSION_LIFETIME_HOURS, "session.lifetime_hours", &mut f.session.lifetime_hours, number)?;
        self.over(STING_SESSION_CACHE_TTL_SECONDS, "session.cache_ttl_seconds", &mut f.session.cache_ttl_seconds, number)?;
        self.over(ANALYTICS_ENABLED, "analytics.enabled", &mut f.analytics.enabled, boolean)?;
        let s_ret = self.over(ANALYTICS_RETENTION_DAYS, "analytics.retention_days", &mut f.analytics.retention_days, number)?;
        let s_geo = self.over(GEOIP_DATABASE, "analytics.geoip_database", &mut f.analytics.geoip_database, text)?;
        let s_asn = self.over(GEOIP_ASN_DATABASE, "analytics.asn_database", &mut f.analytics.asn_database, text)?;
        let s_tok = self
            .over(STING_ANALYTICS_TOKEN, "analytics.api_tokens", &mut f.analytics.api_tokens, |v| list(v).map(|l| l.into_iter().map(Secret::new).collect()))?;
        let s_keys = self.over(ANALYTICS_ENCRYPTION_KEYS, "analytics.encryption_keys", &mut f.analytics.encryption_keys, |v| {
            list(v).map(|l| l.into_iter().map(Secret::new).collect())
        })?;
        self.over(ANALYTICS_IP_MODE, "analytics.ip_mode", &mut f.analytics.ip_mode, IpMode::parse)?;
        let s_kratos = self.over(KRATOS_PUBLIC_URL, "kratos.public_url", &mut f.kratos.public_url, text)?;
        let s_kratos_admin = self.over(KRATOS_ADMIN_URL, "kratos.admin_url", &mut f.kratos.admin_url, text)?;
        self.over(STING_WEBHOOK_SECRET, "security.webhook_secret", &mut f.security.webhook_secret, |v| Ok(Secret::new(v)))?;
        let s_login = self.over(STING_LOGIN_URL, "auth.login_url", &mut f.auth.login_url, text)?;
        let mut env_rules: Option<Vec<String>> = None;
        let s_rules = self.over(STING_REQUIRE_AUTH, "auth.rules", &mut env_rules, |v| list(v).map(Some))?;

        let fs = self.file_source.clone();
        let invalid = |key: &'static str, source: &Source, message: String| ConfigError::Invalid { key, origin: source.clone(), message };

        let listen: SocketAddr = f.server.listen.parse().map_err(|e| invalid("server.listen", &s_listen, format!("{e}: expected host:port")))?;
        let admin_listen: SocketAddr =
            f.server.admin_listen.parse().map_err(|e| invalid("server.admin_listen", &s_admin, format!("{e}: expected host:port")))?;
        if listen == admin_listen {
            return Err(invalid("server.admin_listen", &s_admin, "must differ from server.listen".into()));
        }
        if f.server.threads == 0 || f.server.threads > 1024 {
            return Err(invalid("server.threads", &fs, "must be between 1 and 1024".into()));
        }
        if let Some(cpu) = f.server.analytics_cpu {
            let cpus = crate::config::cpu_affinity::allowed();
            if !cpus.contains(&cpu) {
                return Err(invalid("server.analytics_cpu", &s_cpu, format!("CPU {cpu} is not one this process may use ({cpus:?})")));
            }
        }
        let trusted_proxies = f
            .server
            .trusted_proxies
            .iter()
            .map(|c| parse_cidr(c).map_err(|m| invalid("server.trusted_proxies", &s_trusted, m)))
            .collect::<Result<Vec<_>, _>>()?;

        let (upstream_addr, upstream_host) = parse_http_url(&f.upstream.url).map_err(|m| invalid("upstream.url", &s_upstream, m))?;

        let redis_target = redis_target::parse(&f.redis.mode, f.redis.url.expose())
            .map_err(|(key, message)| invalid(key, if key == "redis.mode" { &s_mode } else { &s_redis }, message))?;
        if f.redis.command_timeout_ms == 0 {
            return Err(invalid("redis.command_timeout_ms", &fs, "must be at least 1".into()));
        }

        if f.session.use_signer && f.session.secret_key.is_empty() {
            return Err(invalid(
                "session.secret_key",
                &s_secret,
                "is empty but session.use_signer is true; set SESSION_SECRET_KEY to the app's SECRET_KEY".into(),
            ));
        }
        if !f.session.use_signer && !f.session.allow_unsigned {
            return Err(invalid(
                "session.use_signer",
                &s_signer,
                "is false: unsigned cookies carry the bare sid, which is the login credential; sign them (SESSION_USE_SIGNER = True in the app) \
                 or set session.allow_unsigned = true to run anyway (the proxy then publishes only a keyed hash of each sid)"
                    .into(),
            ));
        }
        if !f.session.use_signer && f.session.secret_key.is_empty() {
            return Err(invalid(
                "session.secret_key",
                &s_secret,
                "is empty; with unsigned cookies it keys the hash of the session ids the proxy publishes (any long random value, the same on every instance)"
                    .into(),
            ));
        }
        if f.session.key_prefix.is_empty() {
            return Err(invalid("session.key_prefix", &s_prefix, "must not be empty".into()));
        }
        if !is_cookie_name(&f.session.cookie_name) {
            return Err(invalid("session.cookie_name", &s_cookie, "must be a valid cookie name".into()));
        }
        if f.session.lifetime_hours == 0 {
            return Err(invalid("session.lifetime_hours", &s_life, "must be at least 1".into()));
        }
        if f.analytics.retention_days == 0 || f.analytics.retention_days > 3650 {
            return Err(invalid("analytics.retention_days", &s_ret, "must be between 1 and 3650".into()));
        }
        if !f.analytics.geoip_database.is_empty() && !Path::new(&f.analytics.geoip_database).is_file() {
            return Err(invalid("analytics.geoip_database", &s_geo, format!("{:?} is not a readable file", f.analytics.geoip_database)));
        }
        if !f.analytics.asn_database.is_empty() && !Path::new(&f.analytics.asn_database).is_file() {
            return Err(invalid("analytics.asn_database", &s_asn, format!("{:?} is not a readable file", f.analytics.asn_database)));
        }
        if f.analytics.max_pages_per_day == 0 {
            return Err(invalid("analytics.max_pages_per_day", &fs, "must be at least 1".into()));
        }
        if f.analytics.max_range_days == 0 || f.analytics.max_range_days > 3660 {
            return Err(invalid("analytics.max_range_days", &fs, "must be between 1 and 3660".into()));
        }
        if f.analytics.max_acquisition_values_per_day == 0 {
            return Err(invalid("analytics.max_acquisition_values_per_day", &fs, "must be at least 1".into()));
        }
        if f.analytics.max_funnels == 0 || f.analytics.max_funnel_steps < 2 || f.analytics.max_funnel_steps > 64 {
            return Err(invalid("analytics.max_funnels", &fs, "max_funnels must be at least 1 and max_funnel_steps from 2 to 64".into()));
        }
        if f.analytics.funnels.len() > f.analytics.max_funnels {
            return Err(invalid("analytics.funnels", &fs, format!("more than analytics.max_funnels ({}) funnels", f.analytics.max_funnels)));
        }
        for (i, funnel) in f.analytics.funnels.iter().enumerate() {
            crate::config::funnel::check(&funnel.name, &funnel.steps, f.analytics.max_funnel_steps).map_err(|m| invalid("analytics.funnels", &fs, m))?;
            if f.analytics.funnels[..i].iter().any(|o| o.name == funnel.name) {
                return Err(invalid("analytics.funnels", &fs, format!("funnel {:?} is defined twice", funnel.name)));
            }
        }
        for (key, value) in [
            ("analytics.queue_capacity", f.analytics.queue_capacity),
            ("analytics.batch_max_events", f.analytics.batch_max_events),
            ("analytics.batch_max_sessions", f.analytics.batch_max_sessions),
        ] {
            if value == 0 {
                return Err(invalid(key, &fs, "must be at least 1".into()));
            }
        }
        if !(f.analytics.api_prefix.starts_with('/') && f.analytics.api_prefix.ends_with('/')) {
            return Err(invalid("analytics.api_prefix", &fs, "must start and end with '/'".into()));
        }
        let dash = &f.analytics.dashboard_path;
        if !(dash.is_empty() || dash.starts_with('/') && dash.ends_with('/') && dash.len() > 1) {
            return Err(invalid(
                "analytics.dashboard_path",
                &fs,
                "must start and end with '/' (and not be \"/\"), or be empty to disable the dashboard".into(),
            ));
        }
        if !dash.is_empty() && (dash.starts_with(f.analytics.api_prefix.as_str()) || f.analytics.api_prefix.starts_with(dash.as_str())) {
            return Err(invalid("analytics.dashboard_path", &fs, "must not overlap analytics.api_prefix".into()));
        }
        crate::config::privacy::check_keys(f.analytics.encryption_keys.iter().map(Secret::expose))
            .map_err(|m| invalid("analytics.encryption_keys", &s_keys, m))?;
        if let Some(field) = crate::config::privacy::unknown_field(&f.analytics.encrypted_fields) {
            return Err(invalid(
                "analytics.encrypted_fields",
                &fs,
                format!("{field:?} cannot be encrypted; fields: {}", crate::config::privacy::ENCRYPTABLE_FIELDS.join(", ")),
            ));
        }
        if f.analytics.api_tokens.iter().any(|t| t.expose().len() < 16) {
            return Err(invalid("analytics.api_tokens", &s_tok, "every token must be at least 16 characters".into()));
        }
        if !["json", "combined", "off"].contains(&f.server.access_log.as_str()) {
            return Err(invalid("server.access_log", &fs, format!("{:?} is not json, combined or off", f.server.access_log)));
        }
        if f.server.metrics_max_routes == 0 {
            return Err(invalid("server.metrics_max_routes", &fs, "must be at least 1".into()));
        }
        if f.analytics.idle_timeout_seconds == 0 {
            return Err(invalid("analytics.idle_timeout_seconds", &fs, "must be at least 1 (0 would end every session at once)".into()));
        }
        if f.analytics.sweep_interval_seconds == 0 {
            return Err(invalid("analytics.sweep_interval_seconds", &fs, "must be at least 1".into()));
        }
        crate::config::route_template::RouteTemplater::new(&f.analytics.route_templates).map_err(|m| invalid("analytics.route_templates", &fs, m))?;
        for a in &f.analytics.actions {
            if !a.route.starts_with('/') || a.name.is_empty() || a.method.is_empty() {
                return Err(invalid("analytics.actions", &fs, format!("action {:?}: route must start with '/', name and method must not be empty", a.name)));
            }
        }
        if !f.kratos.public_url.is_empty() {
            f.kratos.public_url = f.kratos.public_url.trim_end_matches('/').to_owned();
            parse_url_scheme(&f.kratos.public_url).map_err(|m| invalid("kratos.public_url", &s_kratos, m))?;
            if f.kratos.timeout_ms == 0 {
                return Err(invalid("kratos.timeout_ms", &fs, "must be at least 1".into()));
            }
        }
        f.security.validate().map_err(|(key, message)| invalid(key, &fs, message))?;
        if let Some(d) = f.security.stepping_up().first() {
            if f.kratos.public_url.is_empty() {
                return Err(invalid("security.actions", &fs, format!("{d} = \"step_up\" needs kratos.public_url: the step-up is Kratos's AAL2 login flow")));
            }
        }
        if !f.kratos.admin_url.is_empty() {
            f.kratos.admin_url = f.kratos.admin_url.trim_end_matches('/').to_owned();
            parse_url_scheme(&f.kratos.admin_url).map_err(|m| invalid("kratos.admin_url", &s_kratos_admin, m))?;
        }
        if !(f.auth.login_url.starts_with('/') || parse_url_scheme(&f.auth.login_url).is_ok()) {
            return Err(invalid("auth.login_url", &s_login, "must be a path (/login) or an absolute http(s) URL".into()));
        }
        if !(400..=599).contains(&f.auth.store_down_status) {
            return Err(invalid("auth.store_down_status", &fs, "must be an HTTP error status (400-599)".into()));
        }

        let runtime = crate::config::runtime_dir::default_dir(|k| (self.env)(k));
        if f.server.upgrade_sock.is_empty() {
            f.server.upgrade_sock = runtime.join("upgrade.sock").to_string_lossy().into_owned();
        }
        if f.server.pid_file.is_empty() {
            f.server.pid_file = runtime.join("sting-proxy.pid").to_string_lossy().into_owned();
        }
        if let Some(why) = crate::config::runtime_dir::unsafe_reason(crate::config::runtime_dir::parent_of(&f.server.upgrade_sock)) {
            return Err(invalid("server.upgrade_sock", &fs, why));
        }
        let file_rules = f.auth.rules.iter().map(|r| rule_from_section(r).map_err(|m| invalid("auth.rules", &fs, m))).collect::<Result<Vec<_>, _>>()?;
        // STING_REQUIRE_AUTH replaces the file's public and session rules, but never loosens a
        // role rule: those stay first (first match wins), so `/admin` keeps needing its role.
        let rules_from_env = env_rules.is_some();
        let rules = match env_rules {
            Some(prefixes) => {
                let mut rules: Vec<Rule> = file_rules.into_iter().filter(|r| matches!(r.requirement(), Requirement::Role(_))).collect();
                for prefix in prefixes {
                    rules.push(Rule::new(prefix, Requirement::Session).map_err(|m| invalid("auth.rules", &s_rules, m))?);
                }
                rules
            }
            None => file_rules,
        };

        Ok(Config {
            server: f.server,
            listen,
            admin_listen,
            trusted_proxies,
            upstream: f.upstream,
            upstream_addr,
            upstream_host,
            redis: f.redis,
            redis_target,
            session: f.session,
            kratos: f.kratos,
            auth: f.auth,
            rules,
            rules_from_env,
            analytics: f.analytics,
            security: f.security,
            file: path.map(Path::to_path_buf),
        })
    }
}

fn rule_from_section(r: &RuleSection) -> Result<Rule, String> {
    let req = match r.require.as_str() {
        "public" => Requirement::Public,
        "session" => Requirement::Session,
        "role" if r.roles.is_empty() => return Err(format!("rule for {:?}: require = \"role\" needs a non-empty roles list", r.prefix)),
        "role" => Requirement::Role(r.roles.clone()),
        other => return Err(format!("rule for {:?}: require = {other:?}, expected \"public\", \"session\" or \"role\"", r.prefix)),
    };
    Rule::new(r.prefix.clone(), req)
}

fn text(v: &str) -> Result<String, String> {
    Ok(v.to_owned())
}

fn number<T: std::str::FromStr>(v: &str) -> Result<T, String> {
    v.parse().map_err(|_| format!("{v:?} is not a non-negative whole number"))
}

fn boolean(v: &str) -> Result<bool, String> {
    match v.to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err(format!("{v:?} is not a boolean (true/false)")),
    }
}

fn list(v: &str) -> Result<Vec<String>, String> {
    Ok(v.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect())
}

fn parse_cidr(c: &str) -> Result<IpNet, String> {
    c.parse::<IpNet>().or_else(|_| c.parse::<std::net::IpAddr>().map(IpNet::from)).map_err(|_| format!("{c:?} is not an IP address or CIDR"))
}

fn parse_url_scheme(url: &str) -> Result<(), String> {
    let uri: http::Uri = url.parse().map_err(|e| format!("{url:?}: {e}"))?;
    match uri.scheme_str() {
        Some("http") | Some("https") if uri.host().is_some() => Ok(()),
        _ => Err(format!("{url:?} must be an absolute http:// or https:// URL")),
    }
}

/// `http://host:port` → (`host:port` to connect to, `host[:port]` for the Host header).
fn parse_http_url(url: &str) -> Result<(String, String), String> {
    let uri: http::Uri = url.parse().map_err(|e| format!("{url:?}: {e}"))?;
    if uri.scheme_str() != Some("http") {
        return Err(format!("{url:?}: only http:// upstreams are supported (the app is a local sidecar peer)"));
    }
    let host = uri.host().ok_or_else(|| format!("{url:?} has no host"))?;
    if uri.path() != "/" && !uri.path().is_empty() {
        return Err(format!("{url:?}: a path prefix is not supported"));
    }
    let port = uri.port_u16().unwrap_or(80);
    let host_for_connect = host.trim_start_matches('[').trim_end_matches(']');
    let addr = if host_for_connect.contains(':') { format!("[{host_for_connect}]:{port}") } else { format!("{host_for_connect}:{port}") };
    let authority = uri.authority().map(|a| a.as_str().to_owned()).unwrap_or_else(|| host.to_owned());
    Ok((addr, authority))
}

fn is_cookie_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::io::Write;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |k| m.get(k).cloned()
    }

    fn file_with(body: &str) -> tempfile_path::TempPath {
        tempfile_path::TempPath::with(body)
    }

    /// A tiny temp file helper so config tests need no extra crate.
    mod tempfile_path {
        use super::*;
        pub struct TempPath(pub PathBuf);
        impl TempPath {
            pub fn with(body: &str) -> Self {
                let p = std::env::temp_dir().join(format!("sting-cfg-{}-{}.toml", std::process::id(), uuid::Uuid::new_v4()));
                std::fs::File::create(&p).unwrap().write_all(body.as_bytes()).unwrap();
                TempPath(p)
            }
        }
        impl Drop for TempPath {
            fn drop(&mut self) {
                let _ = std::fs::remove_file(&self.0);
            }
        }
    }

    const SECRET: (&str, &str) = ("SESSION_SECRET_KEY", "s3cret");

    #[test]
    fn defaults_with_a_secret_are_valid() {
        let c = Config::load_with_env(None, env_of(&[SECRET])).unwrap();
        assert_eq!(c.session.key_prefix, "sting:session:");
        assert_eq!(c.session.cookie_name, "session");
        assert_eq!(c.listen.to_string(), "0.0.0.0:8080");
        assert_eq!(c.admin_listen.to_string(), "127.0.0.1:9091");
        assert_eq!(c.upstream_addr, "127.0.0.1:5000");
        assert!(c.rules.is_empty());
    }

    #[test]
    fn missing_secret_names_the_key_and_source() {
        let err = Config::load_with_env(None, env_of(&[])).unwrap_err().to_string();
        assert!(err.contains("session.secret_key"), "{err}");
        assert!(err.contains("built-in default"), "{err}");
    }

    #[test]
    fn unknown_file_key_names_key_and_file() {
        let f = file_with("[session]\nsecret_kye = \"x\"\n");
        let err = Config::load_with_env(Some(&f.0), env_of(&[SECRET])).unwrap_err().to_string();
        assert!(err.contains("secret_kye"), "{err}");
        assert!(err.contains(&f.0.display().to_string()), "{err}");
    }

    #[test]
    fn bad_env_value_names_the_variable() {
        let err = Config::load_with_env(None, env_of(&[SECRET, ("ANALYTICS_RETENTION_DAYS", "lots")])).unwrap_err().to_string();
        assert!(err.contains("analytics.retention_days") && err.contains("ANALYTICS_RETENTION_DAYS"), "{err}");
        let err = Config::load_with_env(None, env_of(&[SECRET, ("STING_UPSTREAM", "ftp://x")])).unwrap_err().to_string();
        assert!(err.contains("upstream.url") && err.contains("STING_UPSTREAM"), "{err}");
        let err = Config::load_with_env(None, env_of(&[SECRET, ("STING_TRUSTED_PROXIES", "10.0.0.0/8, nope")])).unwrap_err().to_string();
        assert!(err.contains("nope") && err.contains("STING_TRUSTED_PROXIES"), "{err}");
    }

    #[test]
    fn env_overrides_file() {
        let f = file_with("[session]\nsecret_key = \"from-file\"\ncookie_name = \"sess\"\n[upstream]\nurl = \"http://10.0.0.1:9000\"\n");
        let c = Config::load_with_env(Some(&f.0), env_of(&[("STING_UPSTREAM", "http://127.0.0.1:5001")])).unwrap();
        assert_eq!(c.session.secret_key.expose(), "from-file");
        assert_eq!(c.session.cookie_name, "sess");
        assert_eq!(c.upstream_addr, "127.0.0.1:5001");
    }

    #[test]
    fn require_auth_env_builds_session_rules() {
        let c = Config::load_with_env(None, env_of(&[SECRET, ("STING_REQUIRE_AUTH", "/dashboard, /api/")])).unwrap();
        assert_eq!(c.rules.len(), 2);
        assert_eq!(c.rules[1].prefix(), "/api/");
    }

    #[test]
    fn role_rule_without_roles_is_rejected() {
        let f = file_with("[session]\nsecret_key = \"k\"\n[[auth.rules]]\nprefix = \"/admin\"\nrequire = \"role\"\n");
        let err = Config::load_with_env(Some(&f.0), env_of(&[])).unwrap_err().to_string();
        assert!(err.contains("auth.rules") && err.contains("roles"), "{err}");
    }

    #[test]
    fn secrets_are_not_printed_by_debug() {
        let c = Config::load_with_env(None, env_of(&[("SESSION_SECRET_KEY", "hunter2-very-secret"), ("REDIS_URL", "redis://:pw123@127.0.0.1/0")])).unwrap();
        let dump = format!("{c:?}");
        assert!(!dump.contains("hunter2") && !dump.contains("pw123"), "{dump}");
    }

    /// The shipped example configuration loads as is.
    #[test]
    fn shipped_config_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("conf/sting-proxy.toml");
        Config::load_with_env(Some(&path), env_of(&[SECRET])).unwrap();
    }
}
