//! The ops commands of the `sting-proxy` binary: `sessions`, `stats`, `top`, `cleanup`,
//! `validate`, `anomalies`, `revoke`, `rotate-keys`, `export`, `erase`, `behavior` and `online`. They talk to Redis directly and print human tables, or with `--json` the same
//! JSON the analytics API answers (the reads are shared, see [`crate::api::queries`]). I/O.

use std::time::Duration;

use anyhow::{anyhow, Context};

use crate::api::endpoint::{valid_id, ApiError, Endpoint};
use crate::api::queries::{self, QueryError};
use crate::capture::request_event::EndReason;
use crate::capture::session_lifecycle::EndedWalk;
use crate::capture::session_scripts;
use crate::config::Config;
use crate::observe::printable::sanitize;
use crate::ops::integrity;
use crate::ops::key_rotation;
use crate::ops::terminal::{cell, key_values, Progress, Table};
use crate::store::field_cipher::FieldCipher;
use crate::store::keys;
use crate::store::RedisStore;

#[derive(Debug, clap::Subcommand)]
pub enum SessionsCommand {
    /// How many sessions are active now, and (up to --limit of) which.
    Active {
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// The most recently started sessions, or one user's sessions (newest first).
    List {
        /// One user's sessions. An id that starts with '-' is given as `--user=-id`.
        #[arg(long, value_name = "USER_ID")]
        user: Option<String>,
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// One session's record and its recent actions.
    Show {
        /// Flask-Session ids are URL-safe base64 and may start with '-': taken as the id.
        #[arg(allow_hyphen_values = true)]
        session_id: String,
    },
}

/// `revoke session SID` / `revoke user USER_ID`.
#[derive(Debug, clap::Subcommand)]
pub enum RevokeCommand {
    /// Revoke one session on every proxy instance (as `DELETE /api/analytics/sessions/{id}`).
    Session {
        #[arg(allow_hyphen_values = true)]
        session_id: String,
    },
    /// Revoke every active session of a user (as `POST /api/analytics/users/{id}/revoke`).
    User {
        #[arg(allow_hyphen_values = true)]
        user_id: String,
    },
}

/// What `top` ranks.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum TopWhat {
    Pages,
    Devices,
    Countries,
}

/// A breakdown period.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum PeriodArg {
    Day,
    Hour,
}

/// One ops command, as parsed by `main`.
#[derive(Debug)]
pub enum Ops {
    Sessions(SessionsCommand),
    Stats { date: Option<String>, from: Option<String>, to: Option<String> },
    Acquisition { period: PeriodArg, date: Option<String>, from: Option<String>, to: Option<String>, limit: usize },
    Funnels { name: Option<String>, from: Option<String>, to: Option<String> },
    Retention { granularity: String, from: Option<String>, to: Option<String> },
    Top { what: TopWhat, period: PeriodArg, date: Option<String>, from: Option<String>, to: Option<String>, limit: usize },
    Cleanup { dry_run: bool },
    Validate { fix: bool },
    Anomalies { date: Option<String>, severity: Option<String>, user: Option<String>, limit: usize },
    Revoke(RevokeCommand),
    Behavior { user_id: String, limit: usize },
    Online { limit: usize },
    RotateKeys { batch: usize },
    Export { user: String },
    ExportAggregates { from: Option<String>, to: Option<String>, format: ExportFormat },
    Erase { user: String, dry_run: bool },
}

/// Runs one command; returns false when it found problems it did not repair (exit status 1).
pub fn run(cfg: &Config, op: Ops, json: bool) -> anyhow::Result<bool> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    // Stored personal fields are shown opened, as the API shows them.
    let cipher = std::sync::Arc::new(FieldCipher::new(&cfg.analytics.encryption_keys).map_err(|e| anyhow!("analytics.encryption_keys: {e}"))?);
    crate::store::field_cipher::install(cipher.clone());
    crate::api::ranges::install_max_range_days(cfg.analytics.max_range_days);
    rt.block_on(async {
        let store = connect(cfg).await?;
        match op {
            Ops::Sessions(c) => sessions(&store, c, json).await,
            Ops::Stats { date, from, to } => stats(&store, date, from, to, json).await,
            Ops::Acquisition { period, date, from, to, limit } => {
                let q = query_string(&[
                    ("period", Some(period_name(period).into())),
                    ("date", date),
                    ("from", from),
                    ("to", to),
                    ("limit", Some(limit.to_string())),
                ]);
                print_json(&ask(&store, Endpoint::Acquisition, &q).await?);
                Ok(true)
            }
            Ops::Funnels { name, from, to } => funnels(&store, name, from, to, json).await,
            Ops::Retention { granularity, from, to } => {
                let q = query_string(&[("granularity", Some(granularity)), ("from", from), ("to", to)]);
                print_json(&ask(&store, Endpoint::Retention, &q).await?);
                Ok(true)
            }
            Ops::Top { what, period, date, from, to, limit } => top(&store, what, period, (date, from, to), limit, json).await,
            Ops::Cleanup { dry_run } => cleanup(cfg, &store, dry_run, json).await,
            Ops::Validate { fix } => validate(cfg, &store, fix, json).await,
            Ops::Anomalies { date, severity, user, limit } => anomalies(&store, date, severity, user, limit, json).await,
            Ops::Revoke(c) => revoke(cfg, store, c, json).await,
            Ops::Behavior { user_id, limit } => behavior(&store, &user_id, limit, json).await,
            Ops::Online { limit } => online(&store, limit, json).await,
            Ops::RotateKeys { batch } => rotate_keys(&store, &cipher, batch, json).await,
            Ops::Export { user } => export_user(cfg, store, user).await,
            Ops::ExportAggregates { from, to, format } => export_aggregates(&store, from, to, format).await,
            Ops::Erase { user, dry_run } => erase_user(cfg, store, user, dry_run, json).await,
        }
    })
}

async fn connect(cfg: &Config) -> anyhow::Result<RedisStore> {
    // Scans and repairs may take longer per round trip than a request may.
    let command_timeout = Duration::from_millis(cfg.redis.command_timeout_ms).max(Duration::from_secs(10));
    let store = RedisStore::new(&cfg.redis_target, Duration::from_millis(cfg.redis.connect_timeout_ms.max(1000)), command_timeout)
        .context("redis.url is not a valid Redis URL")?;
    // The URL may carry a password: name the key, not the value.
    store.connect_once().await.map_err(|e| anyhow!("cannot reach Redis (redis.url / REDIS_URL): {e}"))?;
    Ok(store)
}

/// The query string for a shared query, from CLI options.
fn query_string(pairs: &[(&str, Option<String>)]) -> String {
    let mut q = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        if let Some(v) = v {
            q.append_pair(k, v);
        }
    }
    q.finish()
}

/// Runs a shared query; a bad parameter is reported as the option that carried it.
async fn ask(store: &RedisStore, ep: Endpoint<'_>, query: &str) -> anyhow::Result<serde_json::Value> {
    match queries::answer(store, &ep, Some(query)).await {
        Ok(v) => Ok(v),
        Err(QueryError::Api(ApiError::BadParameter { parameter, message })) => Err(anyhow!("--{parameter}: {message}")),
        Err(QueryError::Api(e)) => Err(anyhow!("{e:?}")),
        Err(QueryError::NotFound(what)) => Err(anyhow!("{what}")),
        Err(QueryError::Store(e)) => Err(anyhow!("reading Redis: {e}")),
    }
}

fn print_json(v: &serde_json::Value) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

/// `2026-11-30T13:05:00.000Z` → `2026-11-30 13:05:00`.
fn short_time(v: &serde_json::Value) -> String {
    match v.as_str() {
        Some(s) => s.get(..19).map(|t| t.replacen('T', " ", 1)).unwrap_or_else(|| s.to_owned()),
        None => cell(v),
    }
}

fn sessions_table(sessions: &[serde_json::Value]) -> Table {
    let mut t = Table::new(&["SESSION", "USER", "STARTED (UTC)", "LAST ACTIVITY", "ENDED", "PAGE VIEWS", "IP", "COUNTRY", "DEVICE"]);
    for s in sessions {
        let ended = match (s["end_time"].is_null(), s["end_reason"].as_str()) {
            (true, _) => "-".to_owned(),
            (false, reason) => reason.unwrap_or("yes").to_owned(),
        };
        let device = format!("{} / {} / {}", cell(&s["device"]["browser"]), cell(&s["device"]["os"]), cell(&s["device"]["type"]));
        t.row(vec![
            cell(&s["session_id"]),
            cell(&s["user_id"]),
            short_time(&s["start_time"]),
            short_time(&s["last_activity"]),
            ended,
            cell(&s["page_views"]),
            cell(&s["ip_address"]),
            cell(&s["location"]["country"]),
            device,
        ]);
    }
    t
}

async fn sessions(store: &RedisStore, c: SessionsCommand, json: bool) -> anyhow::Result<bool> {
    match c {
        SessionsCommand::Active { limit } => {
            if !(1..=crate::api::endpoint::MAX_LIMIT).contains(&limit) {
                return Err(anyhow!("--limit: must be a whole number from 1 to {}", crate::api::endpoint::MAX_LIMIT));
            }
            let mut v = ask(store, Endpoint::ActiveSessions, "").await?;
            let sids = queries::active_session_ids(store, limit).await?;
            v["sessions"] = serde_json::json!(queries::session_records(store, &sids).await?);
            if json {
                print_json(&v);
            } else {
                println!("Active sessions: {} (at {})", v["active_sessions"], short_time(&v["timestamp"]));
                let list = v["sessions"].as_array().cloned().unwrap_or_default();
                if !list.is_empty() {
                    print!("{}", sessions_table(&list).render());
                }
            }
        }
        SessionsCommand::List { user, limit } => {
            if user.as_deref().is_some_and(|u| !valid_id(u)) {
                return Err(anyhow!("--user: not a user id"));
            }
            let q = query_string(&[("limit", Some(limit.to_string()))]);
            let v = match &user {
                Some(u) => ask(store, Endpoint::UserSessions { user_id: u }, &q).await?,
                None => ask(store, Endpoint::RecentSessions, &q).await?,
            };
            if json {
                print_json(&v);
            } else {
                let list = v["sessions"].as_array().cloned().unwrap_or_default();
                let whose = user.map(|u| format!(" of user {u}")).unwrap_or_default();
                println!("Sessions{whose}: showing {} of {} (newest first)", list.len(), v["total_count"]);
                if !list.is_empty() {
                    print!("{}", sessions_table(&list).render());
                }
            }
        }
        SessionsCommand::Show { session_id } => {
            if !valid_id(&session_id) {
                return Err(anyhow!("SESSION_ID: not a session id"));
            }
            let v = ask(store, Endpoint::Session { sid: &session_id }, "").await?;
            if json {
                print_json(&v);
            } else {
                let rows: Vec<(&str, String)> = vec![
                    ("session", cell(&v["session_id"])),
                    ("user", cell(&v["user_id"])),
                    ("email", cell(&v["email"])),
                    ("started", short_time(&v["start_time"])),
                    ("last activity", short_time(&v["last_activity"])),
                    ("ended", format!("{} ({})", short_time(&v["end_time"]), cell(&v["end_reason"]))),
                    ("duration s", cell(&v["duration"])),
                    ("page views", cell(&v["page_views"])),
                    ("hits", cell(&v["hits"])),
                    ("ip", cell(&v["ip_address"])),
                    ("location", format!("{} / {}", cell(&v["location"]["country"]), cell(&v["location"]["city"]))),
                    ("device", format!("{} / {} / {}", cell(&v["device"]["browser"]), cell(&v["device"]["os"]), cell(&v["device"]["type"]))),
                    ("auth", format!("{} {}", cell(&v["auth_source"]), cell(&v["aal"]))),
                ];
                print!("{}", key_values(&rows));
                let mut t = Table::new(&["TIME (UTC)", "ACTION", "PAGE"]);
                for a in v["actions"].as_array().into_iter().flatten() {
                    t.row(vec![short_time(&a["timestamp"]), cell(&a["action"]), cell(&a["page"])]);
                }
                if !t.is_empty() {
                    println!("\nRecent actions (newest first):");
                    print!("{}", t.render());
                }
            }
        }
    }
    Ok(true)
}

async fn stats(store: &RedisStore, date: Option<String>, from: Option<String>, to: Option<String>, json: bool) -> anyhow::Result<bool> {
    let v = ask(store, Endpoint::SessionStats, &query_string(&[("date", date), ("from", from), ("to", to)])).await?;
    if json {
        print_json(&v);
    } else {
        println!("Statistics for {} (UTC)", cell(&v["date"]));
        let rows: Vec<(&str, String)> = [
            ("sessions started", "total_sessions_today"),
            ("sessions ended", "sessions_ended_today"),
            ("average duration (min)", "average_duration_minutes"),
            ("unique users", "unique_users_today"),
            ("page views", "page_views_today"),
            ("hits", "hits_today"),
            ("active sessions now", "active_sessions"),
        ]
        .into_iter()
        .map(|(label, field)| (label, cell(&v[field])))
        .collect();
        print!("{}", key_values(&rows));
    }
    Ok(true)
}

fn period_name(period: PeriodArg) -> &'static str {
    match period {
        PeriodArg::Day => "day",
        PeriodArg::Hour => "hour",
    }
}

/// The funnels, or one funnel's steps as a table.
async fn funnels(store: &RedisStore, name: Option<String>, from: Option<String>, to: Option<String>, json: bool) -> anyhow::Result<bool> {
    let Some(name) = name else {
        print_json(&ask(store, Endpoint::Funnels, "").await?);
        return Ok(true);
    };
    if !crate::config::funnel::valid_name(&name) {
        return Err(anyhow!("NAME: {name:?} is not a funnel name"));
    }
    let v = ask(store, Endpoint::Funnel { name: &name }, &query_string(&[("from", from), ("to", to)])).await?;
    if json {
        print_json(&v);
        return Ok(true);
    }
    println!("Funnel {} from {} to {} (UTC)", cell(&v["name"]), cell(&v["from"]), cell(&v["to"]));
    let mut t = Table::new(&["STEP", "GOAL", "SESSIONS", "USERS", "FROM PREVIOUS", "FROM START"]);
    for s in v["steps"].as_array().into_iter().flatten() {
        t.row(vec![cell(&s["step"]), cell(&s["goal"]), cell(&s["sessions"]), cell(&s["users"]), cell(&s["conversion"]), cell(&s["conversion_from_start"])]);
    }
    print!("{}", t.render());
    Ok(true)
}

/// `--date`, or `--from` and `--to`.
type When = (Option<String>, Option<String>, Option<String>);

async fn top(store: &RedisStore, what: TopWhat, period: PeriodArg, (date, from, to): When, limit: usize, json: bool) -> anyhow::Result<bool> {
    let period = period_name(period);
    let q = query_string(&[("period", Some(period.into())), ("date", date), ("from", from), ("to", to), ("limit", Some(limit.to_string()))]);
    let (ep, title, sections): (Endpoint, &str, &[(&str, &str)]) = match what {
        TopWhat::Pages => (Endpoint::TopPages, "Top pages (route templates)", &[("pages", "PAGE")]),
        TopWhat::Devices => (Endpoint::Devices, "Devices", &[("browsers", "BROWSER"), ("os", "OS"), ("device_types", "DEVICE TYPE")]),
        TopWhat::Countries => (Endpoint::Geo, "Countries and cities", &[("countries", "COUNTRY"), ("cities", "CITY")]),
    };
    let v = ask(store, ep, &q).await?;
    if json {
        print_json(&v);
        return Ok(true);
    }
    println!("{title} by page views, {} (UTC)", cell(&v["date"]));
    for (field, header) in sections {
        let pages = *field == "pages";
        let columns: &[&str] = if pages { &[header, "PAGE VIEWS", "SESSIONS"] } else { &[header, "PAGE VIEWS"] };
        let mut t = Table::new(columns);
        for r in v[field].as_array().into_iter().flatten() {
            let mut row = vec![cell(&r["name"]), cell(&r["count"])];
            if pages {
                row.push(cell(&r["unique_sessions"]));
            }
            t.row(row);
        }
        println!();
        if t.is_empty() {
            println!("{header}: none");
        } else {
            print!("{}", t.render());
        }
    }
    if !v["bots"].is_null() {
        println!("\nbot page views: {}", v["bots"]);
    }
    Ok(true)
}

/// Ends the sessions (active ones and one-request light records) whose app session is gone (or
/// that went idle), the seed's
/// `SessionCleanup`, directly in Redis with the same script the writer uses (so a session is
/// still ended only once, even while proxies run). `dry_run` only reports.
async fn cleanup(cfg: &Config, store: &RedisStore, dry_run: bool, json: bool) -> anyhow::Result<bool> {
    let idle_ms = cfg.analytics.idle_timeout_seconds * 1000;
    let ttl = cfg.analytics.retention_days * 86_400;
    let mut progress = Progress::new();
    let (mut checked, mut expired, mut idle, mut held_back) = (0u64, 0u64, 0u64, 0u64);
    let anonymous_ttl = cfg.session.lifetime_secs();
    let buckets = keys::light_buckets(chrono::Utc::now().timestamp_millis(), anonymous_ttl);
    let mut walk = EndedWalk::new(store, cfg.session.app_key_prefix_of_published(), idle_ms as i64, &buckets);
    while let Some(found) = walk.next_page().await? {
        checked += found.checked as u64;
        let now = chrono::Utc::now().timestamp_millis();
        held_back += found.suspicious_expiry as u64;
        if dry_run {
            for (_, reason) in &found.ended {
                *if *reason == EndReason::Idle { &mut idle } else { &mut expired } += 1;
            }
        } else if !found.ended.is_empty() {
            let mut pipe = redis::pipe();
            for (sid, reason) in &found.ended {
                pipe.add_command(session_scripts::end_for(sid, now, *reason, idle_ms, ttl, anonymous_ttl));
            }
            // END answers -1 for a session another instance ended first.
            let durations: Vec<i64> = store.pipeline(&pipe).await?;
            for ((_, reason), d) in found.ended.iter().zip(durations) {
                if d >= 0 {
                    *if *reason == EndReason::Idle { &mut idle } else { &mut expired } += 1;
                }
            }
        }
        progress.update(&format!("checked {checked} sessions, {} to end", expired + idle));
    }
    progress.done();
    let v = serde_json::json!({
        "checked": checked, "ended": expired + idle, "expired": expired, "idle": idle,
        "dry_run": dry_run, "held_back": held_back,
    });
    if json {
        print_json(&v);
    } else {
        let verb = if dry_run { "would end" } else { "ended" };
        println!("Checked {checked} sessions: {verb} {} ({expired} whose app session is gone, {idle} idle)", expired + idle);
        if held_back > 0 {
            println!(
                "Held back {held_back}: every Flask session of their batch lacked its app key under the prefix {:?}; \
                 check session.key_prefix / SESSION_KEY_PREFIX (they still end when idle)",
                cfg.session.key_prefix
            );
        }
    }
    Ok(held_back == 0)
}

async fn validate(cfg: &Config, store: &RedisStore, fix: bool, json: bool) -> anyhow::Result<bool> {
    let settings = integrity::Settings {
        fix,
        retention_secs: cfg.analytics.retention_days * 86_400,
        kratos_cache_secs: cfg.kratos.cache_ttl_seconds.max(1),
        flask_prefix: cfg.session.key_prefix.clone(),
        revocation_keep_secs: cfg.revocation_keep().as_secs(),
    };
    let findings = integrity::validate(store, &settings, &mut Progress::new()).await?;
    let found: u64 = findings.iter().map(|f| f.found).sum();
    let fixed: u64 = findings.iter().map(|f| f.fixed).sum();
    if json {
        print_json(&serde_json::json!({"fix": fix, "problems": found, "fixed": fixed, "checks": findings}));
    } else {
        let mut t = Table::new(&["CHECK", "EXAMINED", "PROBLEMS", "FIXED", "WHAT"]);
        for f in &findings {
            t.row(vec![f.check.into(), f.examined.to_string(), f.found.to_string(), f.fixed.to_string(), f.description.into()]);
        }
        print!("{}", t.render());
        for f in findings.iter().filter(|f| !f.examples.is_empty()) {
            println!("  {}: e.g. {}", f.check, sanitize(&f.examples.join(", ")));
        }
        match (found, fix) {
            (0, _) => println!("No problems found."),
            (n, false) => println!("{n} problem(s) found; run `sting-proxy validate --fix` to repair them."),
            (n, true) => println!("{n} problem(s) found, {fixed} repaired."),
        }
    }
    Ok(found == 0 || fix)
}

/// The day's anomalies, as `GET /api/analytics/sessions/anomalies` gives them.
async fn anomalies(store: &RedisStore, date: Option<String>, severity: Option<String>, user: Option<String>, limit: usize, json: bool) -> anyhow::Result<bool> {
    let q = query_string(&[("date", date), ("severity", severity), ("user", user), ("limit", Some(limit.to_string()))]);
    let v = ask(store, Endpoint::Anomalies, &q).await?;
    if json {
        print_json(&v);
        return Ok(true);
    }
    let list = v["anomalies"].as_array().cloned().unwrap_or_default();
    println!("Anomalies on {}: showing {} of {} (newest first)", cell(&v["date"]), list.len(), v["total"]);
    let mut t = Table::new(&["TIME (UTC)", "SEVERITY", "DETECTOR", "USER", "SESSION", "EVIDENCE"]);
    for a in &list {
        let evidence: Vec<String> = a["evidence"].as_object().map(|o| o.iter().map(|(k, v)| format!("{k}: {}", cell(v))).collect()).unwrap_or_default();
        t.row(vec![
            short_time(&a["timestamp"]),
            cell(&a["severity"]),
            cell(&a["detector"]),
            cell(&a["user_id"]),
            cell(&a["session_id"]),
            sanitize(&evidence.join(", ")),
        ]);
    }
    print!("{}", t.render());
    Ok(true)
}

/// Re-encrypts every stored personal field under the first key (see `ops::key_rotation`).
async fn rotate_keys(store: &RedisStore, cipher: &FieldCipher, batch: usize, json: bool) -> anyhow::Result<bool> {
    if !cipher.enabled() {
        return Err(anyhow!("analytics.encryption_keys (ANALYTICS_ENCRYPTION_KEYS) is empty: nothing to encrypt with"));
    }
    let mut progress = Progress::new();
    let r = key_rotation::rotate(store, cipher, batch.clamp(10, 10_000), |r| {
        progress.update(&format!("rotate-keys: {} keys scanned, {} fields re-encrypted", r.keys_scanned, r.fields_resealed))
    })
    .await?;
    progress.done();
    if json {
        print_json(&serde_json::json!(r));
    } else {
        println!("rotate-keys: {} keys scanned, {} fields re-encrypted, {} unreadable", r.keys_scanned, r.fields_resealed, r.unreadable);
    }
    // Fields no key opens are a problem to look at (a key missing from the list).
    Ok(r.unreadable == 0)
}

/// Revokes a session or a user's sessions directly in Redis, exactly as the API does (every
/// running proxy refuses them at once; audited as `cli`).
async fn revoke(cfg: &Config, store: RedisStore, c: RevokeCommand, json: bool) -> anyhow::Result<bool> {
    let changes = changes(cfg, store)?;
    let answer = match &c {
        RevokeCommand::Session { session_id } if valid_id(session_id) => changes.revoke_session(session_id, "cli").await,
        RevokeCommand::User { user_id } if valid_id(user_id) => changes.revoke_user(user_id, "cli").await,
        _ => return Err(anyhow!("not a valid id")),
    };
    let v = match answer {
        Ok(v) => v,
        Err(e) => return Err(change_error(e)),
    };
    if json {
        print_json(&v);
    } else {
        match c {
            RevokeCommand::Session { session_id } => {
                println!("Revoked session {} (ended now: {}, app session deleted: {})", sanitize(&session_id), v["ended"], v["app_session_deleted"])
            }
            RevokeCommand::User { user_id } => {
                println!("Revoked {} active session(s) of user {} (Kratos: {})", v["revoked"], sanitize(&user_id), cell(&v["kratos"]))
            }
        }
    }
    Ok(true)
}

/// The API's changes, made from the CLI (audited as `cli`).
fn changes(cfg: &Config, store: RedisStore) -> anyhow::Result<crate::api::changes::Changes> {
    let revocations = std::sync::Arc::new(crate::identity::revocation::Revocations::new(cfg.revocation_keep()));
    let auth = crate::identity::authenticate::Authenticator::from_config(cfg, store.clone(), revocations).context("building the Kratos HTTP client")?;
    Ok(crate::api::changes::Changes::new(cfg, store, std::sync::Arc::new(auth)))
}

fn change_error(e: QueryError) -> anyhow::Error {
    match e {
        QueryError::NotFound(what) => anyhow!("{what}"),
        QueryError::Store(e) => anyhow!("Redis: {e}"),
        QueryError::Api(e) => anyhow!("{e:?}"),
    }
}

/// Every record about a user as one JSON document (as `GET /api/analytics/users/{id}/export`).
async fn export_user(cfg: &Config, store: RedisStore, user_id: String) -> anyhow::Result<bool> {
    if !valid_id(&user_id) {
        return Err(anyhow!("--user: not a valid id"));
    }
    let v = changes(cfg, store)?.export_user(&user_id, "cli").await.map_err(change_error)?;
    print_json(&v);
    Ok(true)
}

/// What `export --from --to` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportFormat {
    Json,
    Csv,
}

/// The daily aggregates of a range, one row per UTC day: every counter of the day's analytics
/// hash, its distinct users and its landings by referrer (`{"from", "to", "days": [...]}`), as
/// JSON or as the CSV the API's `format=csv` writes.
async fn export_aggregates(store: &RedisStore, from: Option<String>, to: Option<String>, format: ExportFormat) -> anyhow::Result<bool> {
    let range = crate::api::ranges::parse_range(Some(&query_string(&[
        ("from", from),
        ("to", to.or_else(|| Some(keys::Period::Day.label(chrono::Utc::now().timestamp_millis())))),
    ])))
    .map_err(|e| match e {
        ApiError::BadParameter { parameter, message } => anyhow!("--{parameter}: {message}"),
        other => anyhow!("{other:?}"),
    })?;
    let mut pipe = redis::pipe();
    for day in &range.labels {
        pipe.hgetall(keys::analytics_period(keys::Period::Day, day))
            .cmd("PFCOUNT")
            .arg(keys::analytics_unique_users(keys::Period::Day, day))
            .zrange_withscores(keys::acquisition(keys::Period::Day, day, "referrers"), 0, -1);
    }
    let replies: Vec<redis::Value> = store.pipeline(&pipe).await.map_err(|e| anyhow!("reading Redis: {e}"))?;
    let mut days = Vec::new();
    for (day, r) in range.labels.iter().zip(replies.chunks(3)) {
        let counters: std::collections::BTreeMap<String, i64> = redis::from_redis_value(&r[0])?;
        let users: i64 = redis::from_redis_value(&r[1])?;
        let referrers: Vec<(String, f64)> = redis::from_redis_value(&r[2])?;
        let mut row = serde_json::json!({"date": day, "unique_users": users});
        for (k, v) in counters {
            row[k] = serde_json::json!(v);
        }
        row["referrers"] =
            serde_json::json!(referrers.into_iter().rev().map(|(name, n)| serde_json::json!({"name": name, "sessions": n as i64})).collect::<Vec<_>>());
        days.push(row);
    }
    let v = serde_json::json!({"from": range.from(), "to": range.to(), "days": days});
    match format {
        ExportFormat::Json => print_json(&v),
        ExportFormat::Csv => print!("{}", crate::api::csv::from_json(&v)),
    }
    Ok(true)
}

/// Erases everything about a user (as `DELETE /api/analytics/users/{id}`).
async fn erase_user(cfg: &Config, store: RedisStore, user_id: String, dry_run: bool, json: bool) -> anyhow::Result<bool> {
    if !valid_id(&user_id) {
        return Err(anyhow!("--user: not a valid id"));
    }
    let v = changes(cfg, store)?.erase_user(&user_id, dry_run, "cli").await.map_err(change_error)?;
    if json {
        print_json(&v);
    } else {
        let verb = if dry_run { "Would erase" } else { "Erased" };
        println!(
            "{verb} user {}: {} session(s), {} key(s), {} entries in shared sets, lists and streams",
            sanitize(&user_id),
            v["sessions"],
            v["keys_deleted"],
            v["entries_removed"]
        );
    }
    Ok(true)
}

fn device_cell(d: &serde_json::Value) -> String {
    format!("{} / {} / {}", cell(&d["browser"]), cell(&d["os"]), cell(&d["type"]))
}

/// One user's behaviour patterns, as `GET /api/analytics/users/{id}/behavior-patterns` gives them.
async fn behavior(store: &RedisStore, user_id: &str, limit: usize, json: bool) -> anyhow::Result<bool> {
    if !valid_id(user_id) {
        return Err(anyhow!("USER_ID: not a user id"));
    }
    let v = ask(store, Endpoint::UserBehavior { user_id }, &query_string(&[("limit", Some(limit.to_string()))])).await?;
    if json {
        print_json(&v);
        return Ok(true);
    }
    let median = match v["median_session_seconds"].as_f64() {
        Some(m) => format!("{m} s (over {} sessions)", v["sessions_measured"]),
        None => "-".to_owned(),
    };
    let rows: Vec<(&str, String)> = vec![
        ("user", cell(&v["user_id"])),
        ("first seen", short_time(&v["first_seen"])),
        ("last seen", short_time(&v["last_seen"])),
        ("requests", cell(&v["requests"])),
        ("sessions", cell(&v["sessions_total"])),
        ("median session", median),
    ];
    print!("{}", key_values(&rows));
    // Usual hours: the busiest cells of the weekday × hour matrix.
    let mut cells: Vec<(i64, usize, usize)> = Vec::new();
    for (d, row) in v["hours"]["matrix"].as_array().into_iter().flatten().enumerate() {
        for (h, n) in row.as_array().into_iter().flatten().enumerate() {
            if let Some(n) = n.as_i64().filter(|n| *n > 0) {
                cells.push((n, d, h));
            }
        }
    }
    cells.sort_by(|a, b| b.0.cmp(&a.0).then((a.1, a.2).cmp(&(b.1, b.2))));
    let mut t = Table::new(&["WEEKDAY", "HOUR (UTC)", "REQUESTS"]);
    for (n, d, h) in cells.iter().take(10) {
        t.row(vec![queries::WEEKDAYS[*d].to_owned(), format!("{h:02}:00"), n.to_string()]);
    }
    for (title, table) in [
        ("Usual hours (busiest first)", t),
        ("Devices", ranked_table(&v["devices"], "DEVICE")),
        ("Countries", ranked_table(&v["countries"], "COUNTRY")),
        ("Top routes", ranked_table(&v["routes"], "ROUTE")),
    ] {
        println!("\n{title}:");
        if table.is_empty() {
            println!("none");
        } else {
            print!("{}", table.render());
        }
    }
    let mut t = Table::new(&["SESSION", "DEVICE", "COUNTRY", "STARTED (UTC)", "LAST ACTIVITY", "ENDED", "LENGTH S"]);
    for s in v["sessions"].as_array().into_iter().flatten() {
        let ended = match s["end_reason"].as_str() {
            Some(r) => format!("{} ({r})", short_time(&s["end_time"])),
            None => "-".to_owned(),
        };
        t.row(vec![
            cell(&s["session_id"]),
            device_cell(&s["device"]),
            cell(&s["location"]["country"]),
            short_time(&s["start_time"]),
            short_time(&s["last_activity"]),
            ended,
            cell(&s["length_seconds"]),
        ]);
    }
    println!("\nSessions across devices (newest first):");
    if t.is_empty() {
        println!("none");
    } else {
        print!("{}", t.render());
    }
    Ok(true)
}

fn ranked_table(rows: &serde_json::Value, header: &str) -> Table {
    let mut t = Table::new(&[header, "REQUESTS"]);
    for r in rows.as_array().into_iter().flatten() {
        t.row(vec![cell(&r["name"]), cell(&r["count"])]);
    }
    t
}

/// Who is online, as `GET /api/analytics/sessions/online` gives it.
async fn online(store: &RedisStore, limit: usize, json: bool) -> anyhow::Result<bool> {
    let v = ask(store, Endpoint::Online, &query_string(&[("limit", Some(limit.to_string()))])).await?;
    if json {
        print_json(&v);
        return Ok(true);
    }
    let list = v["sessions"].as_array().cloned().unwrap_or_default();
    println!("Online: {} signed-in session(s) (newest activity first, at {})", list.len(), short_time(&v["timestamp"]));
    let mut t = Table::new(&["USER", "EMAIL", "SESSION", "DEVICE", "COUNTRY", "CITY", "LAST ACTIVITY", "LAST ROUTE"]);
    for s in &list {
        t.row(vec![
            cell(&s["user_id"]),
            cell(&s["email"]),
            cell(&s["session_id"]),
            device_cell(&s["device"]),
            cell(&s["location"]["country"]),
            cell(&s["location"]["city"]),
            short_time(&s["last_activity"]),
            cell(&s["last_route"]),
        ]);
    }
    if !t.is_empty() {
        print!("{}", t.render());
    }
    Ok(true)
}
